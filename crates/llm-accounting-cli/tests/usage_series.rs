//! `usage stats --period`: time series as a table, JSON, CSV and a terminal chart, through
//! the binary.

use llm_accounting_testkit::Env;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");

/// Records `(model, user, at, cost)` calls.
fn track(env: &Env, calls: &[(&str, &str, &str, &str)]) {
    for (model, user, at, cost) in calls {
        env.run(&[
            "-q",
            "usage",
            "track",
            "--model",
            model,
            "--user",
            user,
            "--at",
            at,
            "--prompt-tokens",
            "100",
            "--completion-tokens",
            "10",
            "--cost",
            cost,
        ])
        .ok();
    }
}

const CALLS: [(&str, &str, &str, &str); 6] = [
    ("gpt-4o", "alice", "2026-03-01T10:00:00Z", "0.5"),
    ("gpt-4o", "alice", "2026-03-01T23:59:59Z", "0.25"),
    ("claude", "bob", "2026-03-02T00:00:00Z", "0.125"),
    ("claude", "carol", "2026-03-04T08:00:00Z", "1"),
    ("gpt-4o", "bob", "2026-03-09T12:00:00Z", "2"),
    ("gpt-4o", "dave", "2026-04-01T00:00:00Z", "0.000001"),
];

#[test]
fn periods_as_json_csv_and_table() {
    let env = Env::new(BIN);
    track(&env, &CALLS);
    let range = ["--since", "2026-03-01", "--until", "2026-04-02"];
    let json = env
        .run(
            &[
                &["usage", "stats", "--period", "day", "--format", "json"][..],
                &range,
            ]
            .concat(),
        )
        .ok()
        .json();
    let got: Vec<(String, u64, String)> = json
        .as_array()
        .expect("array")
        .iter()
        .map(|p| {
            (
                p["start"].as_str().expect("start").to_owned(),
                p["requests"].as_u64().expect("requests"),
                p["cost"].as_str().expect("cost").to_owned(),
            )
        })
        .collect();
    let day = |d: &str, n: u64, c: &str| (format!("{d}T00:00:00Z"), n, c.to_owned());
    assert_eq!(
        got,
        [
            day("2026-03-01", 2, "0.75"),
            day("2026-03-02", 1, "0.125"),
            day("2026-03-04", 1, "1"),
            day("2026-03-09", 1, "2"),
            day("2026-04-01", 1, "0.000001"),
        ]
    );
    assert_eq!(json[0]["period"], "day");

    // Weeks from Monday (2026-03-02 is one), grouped, CSV with full timestamps.
    let csv = env
        .run(
            &[
                &[
                    "usage", "stats", "--period", "week", "--by", "model", "--format", "csv",
                ][..],
                &range,
            ]
            .concat(),
        )
        .ok();
    assert_eq!(
        csv.stdout,
        "PERIOD,MODEL,REQUESTS,PROMPT,COMPLETION,CACHED,REASONING,COST (USD)\n\
         2026-02-23T00:00:00Z,gpt-4o,2,200,20,0,0,0.75\n\
         2026-03-02T00:00:00Z,claude,2,200,20,0,0,1.125\n\
         2026-03-09T00:00:00Z,gpt-4o,1,100,10,0,0,2\n\
         2026-03-30T00:00:00Z,gpt-4o,1,100,10,0,0,0.000001\n"
    );

    // Months; --top 1 per user over the range sums the others as (other).
    let table = env
        .run(
            &[
                &[
                    "usage", "stats", "--period", "month", "--by", "user", "--top", "1",
                ][..],
                &range,
            ]
            .concat(),
        )
        .ok();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("PERIOD"), "{}", table.stdout);
    // bob ($2.125) is the top user; alice and carol are (other) in March.
    assert!(lines[1].starts_with("2026-03  bob"), "{}", table.stdout);
    assert!(lines[1].trim_end().ends_with("2.125"), "{}", table.stdout);
    assert!(lines[2].starts_with("2026-03  (other)"), "{}", table.stdout);
    assert!(lines[2].trim_end().ends_with("1.75"), "{}", table.stdout);
    assert!(lines[3].starts_with("2026-04  (other)"), "{}", table.stdout);

    // Every point together is what `usage stats` says for the range.
    let total = env
        .run(&[&["usage", "stats", "--format", "json"][..], &range].concat())
        .ok()
        .json();
    assert_eq!(total[0]["cost"], "3.875001");
    let hours = env
        .run(
            &[
                &["usage", "stats", "--period", "hour", "--format", "json"][..],
                &range,
            ]
            .concat(),
        )
        .ok()
        .json();
    let micros: u64 = hours
        .as_array()
        .expect("array")
        .iter()
        .map(|p| p["cost_micros"].as_u64().expect("micros"))
        .sum();
    assert_eq!(micros, 3_875_001);
}

#[test]
fn bad_ranges_and_empty_series() {
    let env = Env::new(BIN);
    // --since after --until: exit 2, nothing opened.
    let r = env
        .run(&[
            "usage",
            "stats",
            "--period",
            "day",
            "--since",
            "2026-03-02",
            "--until",
            "2026-03-01",
        ])
        .code(2);
    assert!(r.stderr.contains("not before"), "{r:#?}");
    assert!(!env.db_path().exists(), "the database was opened");
    // More periods than a series may have.
    let r = env
        .run(&[
            "usage",
            "stats",
            "--period",
            "hour",
            "--since",
            "2000-01-01",
        ])
        .code(2);
    assert!(r.stderr.contains("longer period"), "{r:#?}");
    // --chart needs --period; a period nobody asked for is refused.
    env.run(&["usage", "stats", "--chart"]).code(2);
    env.run(&["usage", "stats", "--period", "fortnight"])
        .code(2);
    // Nothing recorded: said, not an empty table.
    let r = env
        .run(&[
            "usage",
            "stats",
            "--period",
            "day",
            "--since",
            "2026-03-01",
            "--until",
            "2026-03-03",
        ])
        .ok();
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr
            .contains("no usage from 2026-03-01T00:00:00Z to 2026-03-03T00:00:00Z"),
        "{r:#?}"
    );
    let r = env
        .run(&[
            "usage",
            "stats",
            "--period",
            "day",
            "--since",
            "2026-03-01",
            "--until",
            "2026-03-03",
            "--format",
            "json",
        ])
        .ok();
    assert_eq!(r.stdout.trim(), "[]");
}

#[test]
fn the_chart_fits_the_width_and_is_plain_into_a_pipe() {
    let env = Env::new(BIN);
    track(&env, &CALLS);
    let args = [
        "usage",
        "stats",
        "--period",
        "day",
        "--since",
        "2026-03-01",
        "--until",
        "2026-03-10",
        "--by",
        "model",
        "--chart",
    ];
    // Into a pipe: ASCII, 80 columns whatever COLUMNS says, a legend.
    let r = env.run_with(&args, None, &[("COLUMNS", "40")]).ok();
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(lines.len(), 9 + 2, "{}", r.stdout);
    assert!(r.stdout.is_ascii(), "{}", r.stdout);
    for l in &lines[..9] {
        assert_eq!(l.chars().count(), 80, "{l:?}");
    }
    // 2026-03-09 is the largest day ($2): a full bar of gpt-4o.
    assert!(lines[8].starts_with("2026-03-09 |####"), "{}", r.stdout);
    assert!(
        lines[8].contains("#|") && lines[8].ends_with(" $2"),
        "{}",
        r.stdout
    );
    assert!(lines[2].contains("|    "), "an empty day: {}", r.stdout);
    assert_eq!(lines[10], "# gpt-4o  = claude");
    // Requests instead of cost.
    let r = env
        .run(&[&args[..], &["--measure", "requests"]].concat())
        .ok();
    assert!(
        r.stdout.lines().next().expect("line").ends_with("| 2"),
        "{}",
        r.stdout
    );

    // On a terminal: coloured blocks within COLUMNS; with NO_COLOR, ASCII again.
    let mut env = env;
    env.set("COLUMNS", "60");
    let (code, shown) = env.run_on_a_terminal(&args, "");
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("\u{1b}[34m\u{2588}"), "{shown:?}");
    for l in shown.lines().filter(|l| l.starts_with("2026-")) {
        let visible = l
            .replace("\u{1b}[0m", "")
            .replace("\u{1b}[34m", "")
            .replace("\u{1b}[33m", "");
        assert_eq!(
            visible.trim_end_matches('\r').chars().count(),
            60,
            "{visible:?}"
        );
    }
    env.set("NO_COLOR", "1");
    let (code, shown) = env.run_on_a_terminal(&args, "");
    assert_eq!(code, Some(0), "{shown}");
    assert!(!shown.contains('\u{1b}'), "{shown:?}");
    assert!(shown.contains("2026-03-09 |####"), "{shown}");
}

//! `usage report` and `usage serve` rendered by a real browser: Debian's chromium, headless
//! (`.ci/run` installs it). The page's totals are `usage stats`'s, every chart has drawn
//! marks, nothing is requested from anywhere (chromium's own network log says so), and the
//! dark and print variants render.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Duration as Days, Utc};
use llm_accounting_testkit::Env;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_llm-accounting");
const KEY: &str = "sk-test-FAKE-report-0123456789";

/// The browser, or `None` (then the test is skipped, unless services are required).
fn chromium() -> Option<PathBuf> {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {name}")])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if found.is_some() {
            return found;
        }
    }
    assert!(
        std::env::var_os("LLM_ACCOUNTING_REQUIRE_SERVICES").is_none_or(|v| v != "1"),
        "chromium is not installed (apt-get install chromium)"
    );
    eprintln!("skipped: chromium is not installed");
    None
}

/// Runs chromium headless on `url` with `args`, a profile of its own in `dir` and its
/// network log in `dir/net.json`; its stdout.
fn browse(browser: &Path, dir: &Path, args: &[&str], url: &str) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--log-net-log={}", dir.join("net.json").display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The requests chromium's network log shows a page making (`initiator` an origin, or the
/// opaque `null` of a `file://` page); the browser's own (update checks and the like) have
/// none.
fn page_requests(net_log: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(net_log).expect("net log");
    // chromium may stop before closing the log's JSON.
    let text = text.trim_end().trim_end_matches(',');
    let log: Value = serde_json::from_str(text)
        .or_else(|_| serde_json::from_str(&format!("{text}]}}")))
        .expect("net log json");
    log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| {
            let p = &e["params"];
            let url = p["url"].as_str()?;
            let initiator = p["initiator"].as_str()?;
            (initiator != "not an origin").then(|| format!("{url} (from {initiator})"))
        })
        .collect()
}

/// RGB of the pixel at (x, y) of a PNG file, and how many pixels are neither near-white nor
/// near-black (drawn in a colour).
fn pixels(path: &Path, x: u32, y: u32) -> ([u8; 3], usize) {
    let decoder = png::Decoder::new(BufReader::new(std::fs::File::open(path).expect("png")));
    let mut reader = decoder.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("png frame");
    let channels = info.color_type.samples();
    let at = |x: u32, y: u32| {
        let i = (y as usize * info.width as usize + x as usize) * channels;
        [buf[i], buf[i + 1], buf[i + 2]]
    };
    let mut coloured = 0;
    for py in 0..info.height {
        for px in 0..info.width {
            let [r, g, b] = at(px, py);
            let (hi, lo) = (r.max(g).max(b), r.min(g).min(b));
            if hi - lo > 60 {
                coloured += 1;
            }
        }
    }
    (at(x, y), coloured)
}

/// The range both commands are given: from ten days ago to an hour ahead.
fn range() -> (String, String) {
    let now = Utc::now();
    let since = (now - Days::days(10)).format("%Y-%m-%d").to_string();
    let until = (now + Days::hours(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    (since, until)
}

/// Usage on several days by two models, a limit, and one quota denial (audited).
fn populated() -> Env {
    let env = Env::new(BIN).secrets(&[KEY]);
    env.run_stdin(
        &[
            "-q",
            "keys",
            "store",
            "--service",
            "openai",
            "--user",
            "alice",
        ],
        KEY,
    )
    .ok();
    for (model, at, cost) in [
        ("gpt-4o", "3d", "0.25"),
        ("gpt-4o", "2d", "0.5"),
        ("claude", "2d", "0.125"),
        ("claude", "1d", "1.000001"),
    ] {
        env.run(&[
            "-q",
            "usage",
            "track",
            "--model",
            model,
            "--user",
            "bob",
            "--at",
            at,
            "--prompt-tokens",
            "100",
            "--completion-tokens",
            "20",
            "--cost",
            cost,
        ])
        .ok();
    }
    env.run(&[
        "-q", "limits", "set", "--type", "requests", "--max", "2", "--per", "day", "--user",
        "alice",
    ])
    .ok();
    let get = [
        "keys",
        "get",
        "--service",
        "openai",
        "--user",
        "alice",
        "--model",
        "gpt-4o",
    ];
    env.run(&get).ok();
    env.run(&get).ok();
    env.run(&get).code(7);
    env
}

#[test]
fn the_report_renders_offline_with_the_totals_of_usage_stats() {
    let Some(browser) = chromium() else { return };
    let env = populated();
    let (since, until) = range();
    let file = env.dir().join("report.html");
    let r = env
        .run(&[
            "usage",
            "report",
            "--since",
            &since,
            "--until",
            &until,
            "--by",
            "model",
            "-o",
            file.to_str().expect("utf-8"),
        ])
        .ok();
    assert!(r.stderr.contains("wrote "), "{r:#?}");
    let stats = env
        .run(&[
            "usage", "stats", "--since", &since, "--until", &until, "--format", "json",
        ])
        .ok()
        .json();
    let url = format!("file://{}", file.display());

    // The page as the browser built it.
    let dir = env.dir().join("light");
    std::fs::create_dir(&dir).expect("mkdir");
    let dom = browse(&browser, &dir, &["--dump-dom"], &url);
    assert!(
        dom.contains(&format!(
            "id=\"total-cost\">${}</div>",
            stats[0]["cost"].as_str().expect("cost")
        )),
        "{dom}"
    );
    assert!(dom.contains(&format!(
        "id=\"total-requests\">{}</div>",
        stats[0]["requests"]
    )));
    let charts: Vec<&str> = dom.split("<svg class=\"chart\"").skip(1).collect();
    assert_eq!(charts.len(), 3, "spend, tokens, activity");
    for chart in &charts {
        let chart = &chart[..chart.find("</svg>").expect("closed")];
        assert!(
            chart.contains("class=\"mark"),
            "a chart without marks: {chart}"
        );
    }
    assert!(
        charts[2].contains("class=\"mark denials\""),
        "the denial is drawn"
    );
    assert!(dom.contains("1 quota denial(s) in the range"), "{dom}");
    // The limit, with its two requests used of two.
    assert!(dom.contains("requests ≤ 2 per day for user=alice"), "{dom}");
    assert!(dom.contains("aria-label=\"100% used\""), "{dom}");
    // The browser's script ran (sortable headers get a pointer).
    assert!(dom.contains("cursor: pointer"), "the script did not run");
    let requests = page_requests(&dir.join("net.json"));
    assert!(requests.is_empty(), "the page requested {requests:?}");

    // Light: white behind, coloured marks.
    let shot = dir.join("light.png");
    browse(
        &browser,
        &dir,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,2200",
        ],
        &url,
    );
    let (corner, coloured) = pixels(&shot, 2, 2);
    assert!(
        corner.iter().all(|c| *c > 240),
        "light background: {corner:?}"
    );
    assert!(coloured > 2_000, "{coloured} coloured pixels");
    // Dark: the reader's preference gives a dark page.
    let dark = env.dir().join("dark");
    std::fs::create_dir(&dark).expect("mkdir");
    let shot = dark.join("dark.png");
    browse(
        &browser,
        &dark,
        &[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,2200",
        ],
        &url,
    );
    let (corner, coloured) = pixels(&shot, 2, 2);
    assert!(
        corner.iter().all(|c| *c < 40),
        "dark background: {corner:?}"
    );
    assert!(coloured > 2_000, "{coloured} coloured pixels in the dark");
    // Print: a PDF of the page.
    let pdf = dark.join("report.pdf");
    browse(
        &browser,
        &dark,
        &[
            "--no-pdf-header-footer",
            &format!("--print-to-pdf={}", pdf.display()),
        ],
        &url,
    );
    let bytes = std::fs::read(&pdf).expect("pdf");
    assert!(bytes.starts_with(b"%PDF"), "not a PDF");
    assert!(bytes.len() > 10_000, "{} bytes", bytes.len());
}

#[test]
fn the_network_check_sees_a_page_that_fetches() {
    // The check above must be able to fail: a page with an image from elsewhere.
    let Some(browser) = chromium() else { return };
    let env = Env::new(BIN);
    let page = env.dir().join("fetches.html");
    std::fs::write(
        &page,
        "<!doctype html><p>x</p><img src=\"http://127.0.0.1:9/x.png\">",
    )
    .expect("write");
    let dir = env.dir().join("b");
    std::fs::create_dir(&dir).expect("mkdir");
    browse(
        &browser,
        &dir,
        &["--dump-dom"],
        &format!("file://{}", page.display()),
    );
    let requests = page_requests(&dir.join("net.json"));
    assert!(
        requests.iter().any(|r| r.contains("127.0.0.1:9")),
        "{requests:?}"
    );
}

#[test]
fn bad_ranges_and_an_empty_report() {
    let env = Env::new(BIN);
    let r = env
        .run(&[
            "usage",
            "report",
            "--since",
            "2026-03-02",
            "--until",
            "2026-03-01",
        ])
        .code(2);
    assert!(r.stderr.contains("not before"), "{r:#?}");
    assert!(
        !env.db_path().exists(),
        "a refused report opened the database"
    );
    let file = env.dir().join("empty.html");
    let r = env
        .run(&[
            "usage",
            "report",
            "--since",
            "2020-01-01",
            "--until",
            "2020-01-31",
            "-o",
            file.to_str().expect("utf-8"),
        ])
        .ok();
    assert!(r.stderr.contains("no usage in this range"), "{r:#?}");
    let html = std::fs::read_to_string(&file).expect("written");
    assert!(
        html.contains("No usage was recorded from 2020-01-01 00:00 UTC to 2020-01-31 00:00 UTC")
    );
    // No master key was made for a report.
    assert!(!env.dir().join("master.key").exists());
    // JSON on stdout.
    let json = env
        .run(&[
            "usage",
            "report",
            "--since",
            "2020-01-01",
            "--until",
            "2020-01-31",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(json["totals"]["requests"], 0);
    assert_eq!(json["days"].as_array().expect("days").len(), 30);
}

/// A running `usage serve`; killed when dropped.
struct Serving {
    child: std::process::Child,
    port: u16,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(env: &Env) -> Serving {
    let mut child = env
        .command(&["usage", "serve", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("usage serve");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        assert!(Instant::now() < deadline, "usage serve did not start");
        let line = lines.next().expect("a line").expect("utf-8");
        if let Some(rest) = line.strip_prefix("dashboard on http://127.0.0.1:") {
            break rest
                .split('/')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
        }
    };
    Serving { child, port }
}

#[test]
fn usage_serve_shows_the_dashboard_to_the_admin_only() {
    let env = populated();
    // No token configured: refused with the fix.
    let r = env
        .run(&["usage", "serve", "--listen", "127.0.0.1:0"])
        .code(2);
    assert!(r.stderr.contains("gateway.admin_token_file"), "{r:#?}");
    let admin = "dashboard-admin-FAKE-0123456789";
    let token_file = env.dir().join("admin.token");
    std::fs::write(&token_file, admin).expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    let mut env = env;
    env.set(
        "LLM_ACCOUNTING_GATEWAY_ADMIN_TOKEN_FILE",
        token_file.to_str().expect("utf-8"),
    );
    let served = serve(&env);
    let base = format!("http://127.0.0.1:{}", served.port);
    let Some(browser) = chromium() else { return };
    // Without the token: the browser gets 401 and no report.
    let dir = env.dir().join("anonymous");
    std::fs::create_dir(&dir).expect("mkdir");
    let dom = browse(
        &browser,
        &dir,
        &["--dump-dom"],
        &format!("{base}/dashboard"),
    );
    assert!(!dom.contains("LLM usage"), "{dom}");
    // With it (as the password of the URL, as a browser sends it after asking).
    let dir = env.dir().join("admin");
    std::fs::create_dir(&dir).expect("mkdir");
    let url = format!(
        "http://admin:{admin}@127.0.0.1:{}/dashboard?days=30",
        served.port
    );
    let dom = browse(&browser, &dir, &["--dump-dom"], &url);
    assert!(dom.contains("<h1>LLM usage</h1>"), "{dom}");
    assert!(dom.contains("Refreshes on its own."));
    let stats = env
        .run(&["usage", "stats", "--since", "30d", "--format", "json"])
        .ok()
        .json();
    assert!(
        dom.contains(&format!(
            "id=\"total-cost\">${}</div>",
            stats[0]["cost"].as_str().expect("cost")
        )),
        "{dom}"
    );
    assert_eq!(
        dom.matches("<svg class=\"chart\"").count(),
        3,
        "every chart drawn"
    );
    let requests: Vec<String> = page_requests(&dir.join("net.json"))
        .into_iter()
        .filter(|r| !r.contains("/dashboard"))
        .collect();
    assert!(requests.is_empty(), "the dashboard requested {requests:?}");
    // The token never reaches the log.
    drop(served);
}

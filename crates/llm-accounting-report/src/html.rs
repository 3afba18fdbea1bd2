//! The report as one HTML page: styles and the small script inline, charts as inline SVG,
//! nothing fetched from anywhere (a Content-Security-Policy says so to the browser), readable
//! without JavaScript, light and dark (the reader's preference), and printable.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use llm_accounting_usage::{Money, StatsRow, series};

use crate::data::{LimitStatus, Report};
use crate::svg;

/// How the page is served.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageOptions {
    /// Reload the page every this many seconds (the live dashboard); `None` for a file.
    pub refresh_seconds: Option<u32>,
}

/// `s` with `&`, `<`, `>`, `"` and `'` escaped: safe in text and in quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Money as the page shows it: exact, in dollars (`$0.000125`).
pub fn dollars(micros: u64) -> String {
    format!("${}", Money::from_micros(micros))
}

/// A count with thousands separators (`1,234,567`).
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A time as the page shows it: `2026-03-01 00:00 UTC`.
pub fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn cost(r: &StatsRow) -> u64 {
    r.cost.micros()
}

fn tokens(r: &StatsRow) -> u64 {
    r.prompt_tokens.saturating_add(r.completion_tokens)
}

/// The whole page.
pub fn page(report: &Report, options: &PageOptions) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"color-scheme\" content=\"light dark\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n",
    );
    if let Some(s) = options.refresh_seconds {
        let _ = writeln!(out, "<meta http-equiv=\"refresh\" content=\"{s}\">");
    }
    let _ = writeln!(
        out,
        "<title>LLM usage, {} to {}</title>",
        report.since.format("%Y-%m-%d"),
        report.until.format("%Y-%m-%d")
    );
    out.push_str("<style>\n");
    out.push_str(STYLE);
    out.push_str("</style>\n</head>\n<body>\n<header>\n<h1>LLM usage</h1>\n");
    let _ = writeln!(
        out,
        "<p class=\"range\">From <time datetime=\"{}\">{}</time> to <time datetime=\"{}\">{}</time> (end excluded). Generated {}.{}</p>",
        report.since.to_rfc3339(),
        utc(report.since),
        report.until.to_rfc3339(),
        utc(report.until),
        utc(report.generated_at),
        if options.refresh_seconds.is_some() {
            " Refreshes on its own."
        } else {
            ""
        }
    );
    out.push_str("</header>\n<main>\n");
    totals(&mut out, &report.totals);
    if report.is_empty() {
        let _ = writeln!(
            out,
            "<p class=\"empty\" id=\"empty\">No usage was recorded from {} to {}.</p>",
            utc(report.since),
            utc(report.until)
        );
    } else {
        daily(&mut out, report);
        tops(&mut out, report);
    }
    limits(&mut out, &report.limits);
    out.push_str("</main>\n<footer>llm-accounting usage report. Money is exact to the micro-dollar; every time is UTC.</footer>\n<script>\n");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body>\n</html>\n");
    out
}

/// The totals line.
fn totals(out: &mut String, t: &StatsRow) {
    out.push_str("<section class=\"totals\" id=\"totals\">\n");
    for (name, id, value) in [
        ("Spend", "total-cost", dollars(t.cost.micros())),
        ("Requests", "total-requests", count(t.requests)),
        ("Prompt tokens", "total-prompt", count(t.prompt_tokens)),
        (
            "Completion tokens",
            "total-completion",
            count(t.completion_tokens),
        ),
    ] {
        let _ = writeln!(
            out,
            "<div class=\"card\"><div class=\"label\">{name}</div><div class=\"value\" id=\"{id}\">{value}</div></div>"
        );
    }
    out.push_str("</section>\n");
}

/// The legend of a stacked chart.
fn legend(out: &mut String, order: &[Option<String>]) {
    if order.len() == 1 && order[0].is_none() {
        return;
    }
    out.push_str("<ul class=\"legend\">");
    for (i, g) in order.iter().enumerate() {
        let _ = write!(
            out,
            "<li><svg width=\"10\" height=\"10\" aria-hidden=\"true\"><rect class=\"s{}\" width=\"10\" height=\"10\"/></svg> {}</li>",
            i.min(svg::CLASSES - 1),
            escape(g.as_deref().unwrap_or("-"))
        );
    }
    out.push_str("</ul>\n");
}

/// The daily charts.
fn daily(out: &mut String, r: &Report) {
    let by = if r.by == "nothing" {
        String::new()
    } else {
        format!(", by {}", r.by)
    };
    let _ = writeln!(
        out,
        "<section id=\"spend\"><h2>Spend per day{by} (USD)</h2>\n<figure>{}</figure>",
        svg::stacked_days("Spend per day", &r.days, &r.series, cost, &|n| dollars(n))
    );
    legend(out, &series::stacks(&r.series, cost).groups);
    out.push_str("</section>\n");
    let _ = writeln!(
        out,
        "<section id=\"tokens\"><h2>Tokens per day{by} (prompt + completion)</h2>\n<figure>{}</figure>",
        svg::stacked_days("Tokens per day", &r.days, &r.series, tokens, &|n| count(n))
    );
    legend(out, &series::stacks(&r.series, tokens).groups);
    out.push_str("</section>\n");
    let denials: u64 = r.activity.iter().map(|a| a.denials).sum();
    let note = if r.denials_recorded {
        format!(
            "{} quota denial(s) in the range (refused key hand-outs, from the audit trail).",
            count(denials)
        )
    } else {
        "Denials are read from the key store's audit trail, which this report had no access to."
            .to_owned()
    };
    let _ = writeln!(
        out,
        "<section id=\"activity\"><h2>Requests and denials per day</h2>\n<figure>{}</figure>\n<ul class=\"legend\"><li><svg width=\"10\" height=\"10\" aria-hidden=\"true\"><rect class=\"requests\" width=\"10\" height=\"10\"/></svg> requests</li><li><svg width=\"10\" height=\"10\" aria-hidden=\"true\"><rect class=\"denials\" width=\"10\" height=\"10\"/></svg> denials</li></ul>\n<p class=\"note\">{note}</p></section>",
        svg::activity_days(&r.days, &r.activity)
    );
}

/// The three "top" tables.
fn tops(out: &mut String, r: &Report) {
    out.push_str("<div class=\"tops\">\n");
    for (id, title, rows) in [
        ("top-users", "Top users", &r.top_users),
        ("top-projects", "Top projects", &r.top_projects),
        ("top-keys", "Top keys", &r.top_keys),
    ] {
        let _ = writeln!(
            out,
            "<section id=\"{id}\"><h2>{title} by spend</h2>\n<table class=\"sortable\"><thead><tr><th>Name</th><th class=\"num\">Requests</th><th class=\"num\">Tokens</th><th class=\"num\">Spend</th><th>Share</th></tr></thead><tbody>"
        );
        let total = r.totals.cost.micros();
        for row in rows.iter() {
            let name = row.group.as_deref().unwrap_or("(none)");
            let share = (u128::from(row.cost.micros()) * 100)
                .checked_div(u128::from(total))
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\" data-v=\"{}\">{}</td><td>{}</td></tr>",
                escape(name),
                row.requests,
                count(row.requests),
                tokens(row),
                count(tokens(row)),
                row.cost.micros(),
                dollars(row.cost.micros()),
                svg::gauge(
                    row.cost.micros(),
                    total,
                    &format!("{share}% of the spend"),
                    false
                )
            );
        }
        out.push_str("</tbody></table></section>\n");
    }
    out.push_str("</div>\n");
}

/// Every limit against its maximum.
fn limits(out: &mut String, limits: &[LimitStatus]) {
    out.push_str("<section id=\"limits\"><h2>Limits, current window</h2>\n");
    if limits.is_empty() {
        out.push_str("<p class=\"note\">No limits are set (<code>llm-accounting limits set</code>).</p></section>\n");
        return;
    }
    out.push_str("<table class=\"sortable\"><thead><tr><th class=\"num\">#</th><th>Limit</th><th class=\"num\">Used</th><th class=\"num\">Maximum</th><th>Usage</th><th>Frees up</th></tr></thead><tbody>\n");
    for l in limits {
        let percent = if l.unlimited || l.max == 0 {
            0
        } else {
            u128::from(l.used) * 100 / u128::from(l.max)
        };
        let label = if l.unlimited {
            "exempt".to_owned()
        } else {
            format!("{percent}% used")
        };
        let _ = writeln!(
            out,
            "<tr><td class=\"num\" data-v=\"{}\">{}</td><td>{}</td><td class=\"num\" data-v=\"{}\">{}</td><td class=\"num\">{}</td><td>{}</td><td><time datetime=\"{}\">{}</time></td></tr>",
            l.id,
            l.id,
            escape(&l.description),
            l.used,
            escape(&l.used_text),
            escape(&l.max_text),
            if l.unlimited {
                "exempt".to_owned()
            } else {
                svg::gauge(l.used, l.max, &label, true)
            },
            l.resets_at.to_rfc3339(),
            utc(l.resets_at)
        );
    }
    out.push_str("</tbody></table></section>\n");
}

/// The page's styles: light by default, dark when the reader prefers it, and print.
const STYLE: &str = r#":root{--bg:#ffffff;--fg:#1d2330;--muted:#5b6474;--grid:#e3e6eb;--card:#f5f7fa;--track:#e9ecf1;
--s0:#3b6fd8;--s1:#e5883b;--s2:#3aa76d;--s3:#b453c9;--s4:#2fa7b8;--s5:#d64d4d;--s6:#8a9a2c;--s7:#c27c9c;--s8:#9aa3b2;
--requests:#3b6fd8;--denials:#d64d4d;--near:#e5a23b;--full:#d64d4d}
@media (prefers-color-scheme: dark){:root{--bg:#12151b;--fg:#e6e9ef;--muted:#9aa3b2;--grid:#2a303b;--card:#1b2029;--track:#2a303b;
--s0:#6f9cf0;--s1:#f0a766;--s2:#5cc58c;--s3:#cf7fe0;--s4:#5cc9d8;--s5:#ee7a7a;--s6:#b3c455;--s7:#e0a1bd;--s8:#7b8494;
--requests:#6f9cf0;--denials:#ee7a7a}}
*{box-sizing:border-box}
body{margin:0 auto;max-width:1100px;padding:24px;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
h1{margin:0 0 4px;font-size:26px}h2{font-size:17px;margin:28px 0 8px}
.range,.note,footer{color:var(--muted)}footer{margin-top:32px;font-size:13px}
.totals{display:flex;flex-wrap:wrap;gap:12px;margin-top:16px}
.card{background:var(--card);border-radius:8px;padding:10px 16px;min-width:180px}
.card .label{color:var(--muted);font-size:13px}.card .value{font-size:22px;font-variant-numeric:tabular-nums}
figure{margin:0}svg.chart{width:100%;height:auto;display:block}
.grid{stroke:var(--grid);stroke-width:1}.axis{fill:var(--muted);font-size:12px}
.s0{fill:var(--s0)}.s1{fill:var(--s1)}.s2{fill:var(--s2)}.s3{fill:var(--s3)}.s4{fill:var(--s4)}.s5{fill:var(--s5)}.s6{fill:var(--s6)}.s7{fill:var(--s7)}.s8{fill:var(--s8)}
.requests{fill:var(--requests)}.denials{fill:var(--denials)}
.legend{list-style:none;padding:0;margin:6px 0 0;display:flex;flex-wrap:wrap;gap:14px;font-size:13px}
.tops{display:grid;grid-template-columns:repeat(auto-fit,minmax(320px,1fr));gap:0 24px}
.tops section,#limits{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:14px}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid var(--grid)}
th{color:var(--muted);font-weight:600;cursor:default}th.sorted::after{content:" \2195"}
.num{text-align:right;font-variant-numeric:tabular-nums}
svg.gauge{width:110px;height:10px;display:inline-block;vertical-align:middle}
.track{fill:var(--track)}.fill{fill:var(--s0)}.near{fill:var(--near)}.full{fill:var(--full)}
.empty{font-size:17px;padding:24px;background:var(--card);border-radius:8px}
.tip{position:fixed;pointer-events:none;background:var(--fg);color:var(--bg);padding:3px 8px;border-radius:4px;font-size:12px}
@media print{:root{--bg:#fff;--fg:#000;--muted:#444;--card:#fff;--grid:#ccc}
body{max-width:none;padding:0;font-size:11pt}.card{border:1px solid #ccc}
section{break-inside:avoid}.tip{display:none}*{-webkit-print-color-adjust:exact;print-color-adjust:exact}}
"#;

/// The page's script: tooltips that follow the pointer (the SVG `<title>`s work without
/// it) and sorting a table by a click on its header. Nothing is fetched.
const SCRIPT: &str = r#"(function(){
var tip=document.createElement('div');tip.className='tip';tip.hidden=true;document.body.appendChild(tip);
document.querySelectorAll('svg .mark').forEach(function(m){
var t=m.querySelector('title');if(!t)return;var text=t.textContent;
m.addEventListener('mousemove',function(e){tip.textContent=text;tip.hidden=false;tip.style.left=(e.clientX+12)+'px';tip.style.top=(e.clientY+12)+'px';});
m.addEventListener('mouseleave',function(){tip.hidden=true;});});
document.querySelectorAll('table.sortable').forEach(function(table){
table.querySelectorAll('th').forEach(function(th,col){th.style.cursor='pointer';
th.addEventListener('click',function(){var body=table.tBodies[0];var rows=Array.prototype.slice.call(body.rows);
var asc=th.dataset.asc!=='1';th.dataset.asc=asc?'1':'0';
rows.sort(function(a,b){var x=a.cells[col],y=b.cells[col];
var vx=x.dataset.v!==undefined?Number(x.dataset.v):x.textContent,vy=y.dataset.v!==undefined?Number(y.dataset.v):y.textContent;
return (vx<vy?-1:vx>vy?1:0)*(asc?1:-1);});
rows.forEach(function(r){body.appendChild(r);});
table.querySelectorAll('th').forEach(function(h){h.classList.remove('sorted');});th.classList.add('sorted');});});});
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_numbers_are_exact() {
        assert_eq!(escape(r#"<script>"a'&"#), "&lt;script&gt;&quot;a&#39;&amp;");
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(12_345_678), "12,345,678");
        assert_eq!(dollars(1), "$0.000001");
        assert_eq!(dollars(3_875_001), "$3.875001");
    }
}

//! What the CLI prints: key listings (table or JSON), notices, and error lines.
//! Nothing here ever sees a secret. Every string from the database goes through [`escape`].

use chrono::{DateTime, SecondsFormat, Utc};
use comfy_table::{Table, presets};
use llm_accounting::{AuditRecord, DefaultsUsed, KeyRecord, VersionInfo};
use serde::Serialize;

pub(crate) use crate::error_line::{error_line, log_hint};
use crate::escape;

/// A timestamp as RFC 3339 UTC with whole seconds: `2026-11-28T21:00:00Z`.
pub(crate) fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The listing as an aligned table.
pub(crate) fn table(keys: &[KeyRecord]) -> String {
    let now = Utc::now();
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header([
        "SERVICE",
        "USER",
        "PROJECT",
        "STATE",
        "VERSION",
        "HINT",
        "CREATED",
        "LAST USED",
        "EXPIRES",
    ]);
    for k in keys {
        table.add_row(escape::row([
            k.identity.service().to_owned(),
            k.identity.user().unwrap_or("-").to_owned(),
            k.identity.project().unwrap_or("-").to_owned(),
            k.effective_state(now).to_owned(),
            k.current_version.to_string(),
            k.hint.clone().unwrap_or_else(|| "-".to_owned()),
            timestamp(&k.created_at),
            k.last_used_at
                .as_ref()
                .map(timestamp)
                .unwrap_or_else(|| "-".to_owned()),
            optional_time(k.expires_at.as_ref()),
        ]));
    }
    crate::print::finish_table(table)
}

/// `keys get --format json`: the identity and the key. Serialized straight to stdout.
#[derive(Serialize)]
pub(crate) struct KeyValueJson<'a> {
    /// The key's service.
    pub(crate) service: &'a str,
    /// Its user, null for none.
    pub(crate) user: Option<&'a str>,
    /// Its project, null for none.
    pub(crate) project: Option<&'a str>,
    /// Whether this is the previous value (`--previous`).
    pub(crate) previous: bool,
    /// The key itself.
    pub(crate) key: &'a str,
}

/// What an empty key listing says: what was asked for. `stored` is how many keys matched
/// the filter before `--expiring`.
pub(crate) fn no_keys_message(
    filter: &llm_accounting::KeyFilter,
    expiring: Option<std::time::Duration>,
    stored: usize,
) -> String {
    let mut who = Vec::new();
    if let Some(s) = &filter.service {
        who.push(format!("service \"{s}\""));
    }
    if let Some(u) = &filter.user {
        who.push(format!("user \"{u}\""));
    }
    if let Some(p) = &filter.project {
        who.push(format!("project \"{p}\""));
    }
    let scope = if who.is_empty() {
        String::new()
    } else {
        format!(" for {}", who.join(", "))
    };
    let text = match expiring {
        Some(within) => format!(
            "no keys{scope} expire within {} ({stored} stored)",
            span(within)
        ),
        None => format!("no keys stored{scope}"),
    };
    escape::text(&text).into_owned()
}

/// A duration in words: `7 days`, `12 hours`, else humantime's form.
pub(crate) fn span(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let unit = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    match secs {
        0 => "0 seconds".to_owned(),
        s if s % 86_400 == 0 => unit(s / 86_400, "day"),
        s if s % 3_600 == 0 => unit(s / 3_600, "hour"),
        s if s % 60 == 0 => unit(s / 60, "minute"),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// One key in the JSON listing.
#[derive(Debug, Serialize)]
struct KeyJson<'a> {
    service: &'a str,
    user: Option<&'a str>,
    project: Option<&'a str>,
    state: &'static str,
    version: u32,
    hint: Option<&'a str>,
    created_at: String,
    updated_at: String,
    last_used_at: Option<String>,
    expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    versions: Option<Vec<VersionJson<'a>>>,
}

/// One version in the JSON listing.
#[derive(Debug, Serialize)]
struct VersionJson<'a> {
    version: u32,
    state: &'static str,
    hint: Option<&'a str>,
    provider: &'a str,
    master_key_ref: &'a str,
    created_at: String,
    expires_at: Option<String>,
    retire_at: Option<String>,
}

fn optional_time(t: Option<&DateTime<Utc>>) -> String {
    t.map(timestamp).unwrap_or_else(|| "-".to_owned())
}

/// Every version of every key, as an aligned table.
pub(crate) fn versions_table(keys: &[(KeyRecord, Vec<VersionInfo>)]) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header([
        "SERVICE",
        "USER",
        "PROJECT",
        "VERSION",
        "STATE",
        "HINT",
        "CREATED",
        "EXPIRES",
        "RETIRES",
        "MASTER KEY",
    ]);
    for (k, versions) in keys {
        for v in versions {
            table.add_row(escape::row([
                k.identity.service().to_owned(),
                k.identity.user().unwrap_or("-").to_owned(),
                k.identity.project().unwrap_or("-").to_owned(),
                v.version.to_string(),
                v.state.as_str().to_owned(),
                v.hint.clone().unwrap_or_else(|| "-".to_owned()),
                timestamp(&v.created_at),
                optional_time(v.expires_at.as_ref()),
                optional_time(v.retire_at.as_ref()),
                format!("{} {}", v.provider, v.master_key_ref),
            ]));
        }
    }
    crate::print::finish_table(table)
}

/// The listing as a pretty-printed JSON array.
pub(crate) fn json(keys: &[KeyRecord]) -> String {
    let with: Vec<(&KeyRecord, Option<&[VersionInfo]>)> = keys.iter().map(|k| (k, None)).collect();
    json_rows(&with)
}

/// The listing with every version of each key, as a pretty-printed JSON array.
pub(crate) fn json_with_versions(keys: &[(KeyRecord, Vec<VersionInfo>)]) -> String {
    let with: Vec<(&KeyRecord, Option<&[VersionInfo]>)> =
        keys.iter().map(|(k, v)| (k, Some(v.as_slice()))).collect();
    json_rows(&with)
}

fn json_rows(keys: &[(&KeyRecord, Option<&[VersionInfo]>)]) -> String {
    let now = Utc::now();
    let rows: Vec<KeyJson<'_>> = keys
        .iter()
        .map(|(k, versions)| KeyJson {
            service: k.identity.service(),
            user: k.identity.user(),
            project: k.identity.project(),
            state: k.effective_state(now),
            version: k.current_version,
            hint: k.hint.as_deref(),
            created_at: timestamp(&k.created_at),
            updated_at: timestamp(&k.updated_at),
            last_used_at: k.last_used_at.as_ref().map(timestamp),
            expires_at: k.expires_at.as_ref().map(timestamp),
            versions: versions.map(|vs| {
                vs.iter()
                    .map(|v| VersionJson {
                        version: v.version,
                        state: v.state.as_str(),
                        hint: v.hint.as_deref(),
                        provider: &v.provider,
                        master_key_ref: &v.master_key_ref,
                        created_at: timestamp(&v.created_at),
                        expires_at: v.expires_at.as_ref().map(timestamp),
                        retire_at: v.retire_at.as_ref().map(timestamp),
                    })
                    .collect()
            }),
        })
        .collect();
    // Serializing plain strings and numbers cannot fail.
    escape::json(serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned()))
}

/// Audit records as an aligned table. TIME is when the (last) event happened; a row that
/// stands for several events shows how many in COUNT and the first one's time in FIRST.
pub(crate) fn audit_table(records: &[AuditRecord]) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING).set_header([
        "SEQ",
        "TIME",
        "COUNT",
        "FIRST",
        "OPERATION",
        "SERVICE",
        "USER",
        "PROJECT",
        "PRINCIPAL",
        "OUTCOME",
        "DETAIL",
    ]);
    for r in records {
        let e = &r.event;
        let id = e.identity.as_ref();
        table.add_row(escape::row([
            r.seq.to_string(),
            timestamp(&e.at),
            e.count.to_string(),
            optional_time(e.first_at.as_ref()),
            e.operation.clone(),
            id.map_or("-", |i| i.service()).to_owned(),
            id.and_then(|i| i.user()).unwrap_or("-").to_owned(),
            id.and_then(|i| i.project()).unwrap_or("-").to_owned(),
            e.principal.clone(),
            e.outcome.clone(),
            e.detail.clone().unwrap_or_else(|| "-".to_owned()),
        ]));
    }
    crate::print::finish_table(table)
}

/// One audit record in JSON.
#[derive(Debug, Serialize)]
struct AuditJson<'a> {
    seq: u64,
    at: String,
    operation: &'a str,
    service: Option<&'a str>,
    user: Option<&'a str>,
    project: Option<&'a str>,
    principal: &'a str,
    outcome: &'a str,
    provider: Option<&'a str>,
    master_key_ref: Option<&'a str>,
    detail: Option<&'a str>,
    /// How many events the row stands for (1 for a single event).
    count: u64,
    /// The first of several events' time (`at` is the last's); null for a single event.
    first_at: Option<String>,
    hash: &'a str,
}

/// Audit records as a pretty-printed JSON array.
pub(crate) fn audit_json(records: &[AuditRecord]) -> String {
    let rows: Vec<AuditJson<'_>> = records
        .iter()
        .map(|r| {
            let e = &r.event;
            let id = e.identity.as_ref();
            AuditJson {
                seq: r.seq,
                at: e.at.to_rfc3339_opts(SecondsFormat::Micros, true),
                operation: &e.operation,
                service: id.map(|i| i.service()),
                user: id.and_then(|i| i.user()),
                project: id.and_then(|i| i.project()),
                principal: &e.principal,
                outcome: &e.outcome,
                provider: e.provider.as_deref(),
                master_key_ref: e.master_key_ref.as_deref(),
                detail: e.detail.as_deref(),
                count: e.count,
                first_at: e
                    .first_at
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true)),
                hash: &r.hash,
            }
        })
        .collect();
    escape::json(serde_json::to_string_pretty(&rows).unwrap_or_else(|_| "[]".to_owned()))
}

/// A progress bar on stderr when it is a terminal (and not `--quiet`).
pub(crate) fn progress_bar(quiet: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {wide_bar} {pos}/{len} versions ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

/// The notice saying which defaults were used, if any were.
pub(crate) fn defaults_notice(used: &DefaultsUsed) -> Option<String> {
    let verb = if used.created_any() {
        "created and using"
    } else {
        "using"
    };
    let notice = match (&used.database, &used.master_key_file) {
        (Some(db), Some(key)) => Some(format!(
            "using default database {db} and master key {key} (set \
             LLM_ACCOUNTING_DATABASE_URL / LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE to choose)"
        )),
        (Some(db), None) => Some(format!(
            "using default database {db} (set LLM_ACCOUNTING_DATABASE_URL to choose)"
        )),
        (None, Some(key)) => Some(format!(
            "using default master key {key} (set LLM_ACCOUNTING_LOCAL_MASTER_KEY_FILE to choose)"
        )),
        (None, None) => None,
    };
    notice.map(|n| match n.strip_prefix("using ") {
        Some(rest) => format!("{verb} {rest}"),
        None => n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use llm_accounting::{KeyIdentity, KeyState};

    fn record(user: Option<&str>) -> KeyRecord {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 28, 21, 0, 0)
            .single()
            .expect("valid time");
        KeyRecord {
            id: Default::default(),
            identity: KeyIdentity::from_parts("openai", user, None).expect("valid"),
            state: KeyState::Active,
            current_version: 2,
            hint: Some("…wxyz".into()),
            created_at: t,
            updated_at: t,
            last_used_at: None,
            expires_at: None,
            revision: 1,
            seal: None,
        }
    }

    #[test]
    fn empty_listings_say_what_was_asked() {
        let all = llm_accounting::KeyFilter::default();
        assert_eq!(no_keys_message(&all, None, 0), "no keys stored");
        let week = std::time::Duration::from_secs(7 * 86_400);
        assert_eq!(
            no_keys_message(&all, Some(week), 3),
            "no keys expire within 7 days (3 stored)"
        );
        let openai = llm_accounting::KeyFilter {
            service: Some("openai".into()),
            ..Default::default()
        };
        assert_eq!(
            no_keys_message(&openai, None, 0),
            "no keys stored for service \"openai\""
        );
        assert_eq!(span(std::time::Duration::from_secs(3_600)), "1 hour");
    }

    #[test]
    fn timestamps_are_rfc3339_seconds_utc() {
        assert_eq!(timestamp(&record(None).created_at), "2026-11-28T21:00:00Z");
    }

    #[test]
    fn table_shows_absent_parts_as_dash() {
        let t = table(&[record(None), record(Some("alice"))]);
        assert!(t.contains("SERVICE") && t.contains("LAST USED"), "{t}");
        assert!(t.contains("alice") && t.contains("…wxyz"), "{t}");
        assert!(t.contains("2026-11-28T21:00:00Z"), "{t}");
        let first_row = t.lines().nth(1).expect("row");
        assert!(first_row.contains(" - "), "{first_row}");
    }

    #[test]
    fn json_uses_null_for_absent_parts() {
        let v: serde_json::Value = serde_json::from_str(&json(&[record(None)])).expect("json");
        assert_eq!(v[0]["service"], "openai");
        assert!(v[0]["user"].is_null() && v[0]["last_used_at"].is_null());
        assert_eq!(v[0]["version"], 2);
        assert_eq!(v[0]["created_at"], "2026-11-28T21:00:00Z");
        assert_eq!(json(&[]), "[]");
    }

    #[test]
    fn notice_names_what_was_defaulted() {
        assert_eq!(defaults_notice(&DefaultsUsed::default()), None);
        let both = DefaultsUsed {
            database: Some("/d/keys.db".into()),
            master_key_file: Some("/d/master.key".into()),
            ..DefaultsUsed::default()
        };
        let n = defaults_notice(&both).expect("notice");
        assert!(n.starts_with("using default database /d/keys.db and master key /d/master.key"));
    }

    #[test]
    fn audit_output_shows_counts_and_first_times() {
        use llm_accounting::{AuditEvent, AuditRecord};
        let id = KeyIdentity::from_parts("openai", Some("alice"), None).expect("valid");
        let last = Utc
            .with_ymd_and_hms(2026, 11, 28, 21, 0, 9)
            .single()
            .expect("valid time");
        let single = AuditEvent {
            at: last,
            ..AuditEvent::now("get", Some(&id), "-").detail("cache miss")
        };
        let hits = AuditEvent {
            at: last,
            ..AuditEvent::now("get", Some(&id), "-").detail("cache hit")
        }
        .aggregated(4321, last - chrono::Duration::microseconds(8_500_001));
        let records: Vec<AuditRecord> = [single, hits]
            .into_iter()
            .enumerate()
            .map(|(i, e)| AuditRecord::chain(i as u64, "0", e))
            .collect();

        let table = audit_table(&records);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("SEQ  TIME"), "{table}");
        assert!(
            lines[0].contains("COUNT") && lines[0].contains("FIRST"),
            "{table}"
        );
        assert!(
            lines[1].contains("2026-11-28T21:00:09Z  1      -  "),
            "a single event: count 1, no first time\n{table}"
        );
        assert!(
            lines[2].contains("2026-11-28T21:00:09Z  4321   2026-11-28T21:00:00Z  get"),
            "an aggregated row: its count and first time\n{table}"
        );

        let json: serde_json::Value =
            serde_json::from_str(&audit_json(&records)).expect("valid JSON");
        assert_eq!(json[0]["count"], 1);
        assert!(json[0]["first_at"].is_null());
        assert_eq!(json[1]["count"], 4321);
        assert_eq!(json[1]["first_at"], "2026-11-28T21:00:00.499999Z");
        assert_eq!(json[1]["at"], "2026-11-28T21:00:09.000000Z");
    }
}

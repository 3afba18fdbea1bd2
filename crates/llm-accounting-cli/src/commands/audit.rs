//! `keys audit`: list the trail (filtered), verify its chain, or print its head.

use llm_accounting::{AuditRecord, Error, Result};

use super::{Context, finish};
use crate::cli::{AuditArgs, Format};
use crate::{output, print};

/// The operations the library records, for `--operation`. An operation outside this list is
/// still accepted when the trail holds it (a newer writer may record more).
pub(crate) const OPERATIONS: &[&str] = &[
    "store",
    "rotate",
    "get",
    "get_previous",
    "list",
    "versions",
    "disable",
    "enable",
    "delete",
    "rewrap",
    "rewrap_check",
    "rotate_branch",
    "seal",
    "store_many",
    llm_accounting::DROPPED_OPERATION,
];

/// `keys audit`.
pub(crate) async fn audit(ctx: &Context, args: &AuditArgs) -> Result<()> {
    crate::print::use_csv(args.format == Format::Csv);
    // Parsed before anything is opened: a malformed head is a usage error.
    let expected = args
        .expect_head
        .as_deref()
        .map(str::parse::<llm_accounting::AuditHead>)
        .transpose()?;
    if let (Some(since), Some(until)) = (args.since, args.until)
        && since > until
    {
        return Err(Error::invalid(
            "--until",
            "it is before --since: no record can match",
        ));
    }
    let manager = ctx.manager().await?;
    if args.verify || args.head {
        let result = manager.verify_audit_head(expected.as_ref()).await;
        let (n, head) = finish(&manager, result).await?;
        if args.head {
            return print::print(&head.to_string(), "writing the audit head");
        }
        ctx.say(&match &expected {
            Some(h) => format!(
                "audit chain intact: {n} record(s); it still holds head {}",
                h.seq
            ),
            None => format!("audit chain intact: {n} record(s)"),
        });
        return Ok(());
    }
    let filter = llm_accounting::AuditFilter {
        service: args.service.clone(),
        user: args.user.clone(),
        operation: args.operation.clone(),
        since: args.since,
    };
    let result = async {
        let mut records = manager.audit_records(&filter).await?;
        if let Some(until) = args.until {
            records.retain(|r| r.event.at <= until);
        }
        if let Some(op) = &args.operation
            && records.is_empty()
            && !OPERATIONS.contains(&op.as_str())
        {
            check_operation(&manager, op).await?;
        }
        Ok(records)
    }
    .await;
    let records = finish(&manager, result).await?;
    let text = match args.format {
        Format::Json => output::audit_json(&records),
        Format::Table if records.is_empty() => {
            ctx.say(&no_records_message(args));
            return Ok(());
        }
        Format::Table | Format::Csv => output::audit_table(&records),
    };
    print::print(&text, "writing the audit records")
}

/// Refuses an operation that is neither one the library records nor one in the trail (a
/// typo such as `gett`), naming the real ones.
async fn check_operation(manager: &llm_accounting::SecureKeyManager, op: &str) -> Result<()> {
    let all = manager
        .audit_records(&llm_accounting::AuditFilter::default())
        .await?;
    if all.iter().any(|r: &AuditRecord| r.event.operation == op) {
        return Ok(());
    }
    Err(Error::invalid(
        "--operation",
        format!(
            "no operation is called `{}`; the operations are: {}",
            crate::escape::text(op),
            OPERATIONS.join(", ")
        ),
    ))
}

/// What an empty listing says: what was asked for.
fn no_records_message(args: &AuditArgs) -> String {
    let mut parts = Vec::new();
    if let Some(op) = &args.operation {
        parts.push(format!("operation {op}"));
    }
    if let Some(s) = &args.service {
        parts.push(format!("service {s}"));
    }
    if let Some(u) = &args.user {
        parts.push(format!("user {u}"));
    }
    if let Some(t) = &args.since {
        parts.push(format!("since {}", output::timestamp(t)));
    }
    if let Some(t) = &args.until {
        parts.push(format!("until {}", output::timestamp(t)));
    }
    if parts.is_empty() {
        "the audit trail is empty".to_owned()
    } else {
        crate::escape::text(&format!("no audit records for {}", parts.join(", "))).into_owned()
    }
}

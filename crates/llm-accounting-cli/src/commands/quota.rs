//! `quota check`, and the quota-gated `keys get --model`.

use clap::{Args, Subcommand};
use llm_accounting::usage::{CallUsage, Money, QuotaDecision, QuotaRequest};
use llm_accounting::{ApiKey, Error, KeyIdentity, Result, Stack};

use super::{Context, args};

/// `quota` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum QuotaCommand {
    /// Whether a call fits every limit now: exit 0 if allowed, 7 if not (one line on stderr
    /// naming the limit, its usage/maximum and reset time). Records nothing.
    Check(CheckArgs),
}

/// Arguments of `quota check`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The model to call.
    #[arg(long, value_name = "M")]
    model: String,
    /// Who makes the call, through what, for what.
    #[command(flatten)]
    scope: args::ScopeArgs,
    /// Estimated prompt tokens.
    #[arg(long, value_name = "N", default_value_t = 0)]
    input_tokens: u64,
    /// Estimated completion tokens.
    #[arg(long, value_name = "N", default_value_t = 0)]
    output_tokens: u64,
    /// Estimated cost in US dollars.
    #[arg(long, value_name = "DECIMAL", value_parser = args::money, allow_negative_numbers = true)]
    cost: Option<Money>,
}

/// Runs a `quota` subcommand.
pub(super) async fn run(ctx: &Context, command: QuotaCommand) -> Result<()> {
    match command {
        QuotaCommand::Check(a) => check(ctx, a).await,
    }
}

async fn check(ctx: &Context, a: CheckArgs) -> Result<()> {
    let request = a
        .scope
        .request(a.model)
        .tokens(a.input_tokens, a.output_tokens)
        .cost(a.cost.unwrap_or_default());
    let accounting = ctx.accounting().await?;
    let result = accounting.check(&request).await;
    match super::finish_accounting(&accounting, result).await? {
        QuotaDecision::Allowed => {
            ctx.say("allowed");
            Ok(())
        }
        QuotaDecision::Denied(d) => Err(Error::from(*d)),
    }
}

/// `keys get --model M`: the key, only if the quota allows the call; one request is recorded
/// at once (the process ends before any call is made, so tokens and cost stay unknown).
pub(super) async fn gated_get(
    ctx: &Context,
    identity: &KeyIdentity,
    model: &str,
    input_tokens: u64,
) -> Result<ApiKey> {
    let mut keys = gated_get_many(ctx, std::slice::from_ref(identity), model, input_tokens).await?;
    keys.pop()
        .ok_or_else(|| llm_accounting::Error::invalid("identity", "no key was asked for"))
}

/// [`gated_get`] for several keys (`exec --model`): all or nothing (see
/// [`llm_accounting::usage::Accounting::get_keys`]); each hand-out counts one request at once.
pub(super) async fn gated_get_many(
    ctx: &Context,
    identities: &[KeyIdentity],
    model: &str,
    input_tokens: u64,
) -> Result<Vec<ApiKey>> {
    let request = QuotaRequest::new(model).tokens(input_tokens, 0);
    // Checked before anything is opened: bad input opens and records nothing.
    request.validate()?;
    let stack = ctx.stack(Stack::builder(&ctx.settings)).await?;
    let manager = stack.manager();
    let Some(accounting) = stack.accounting() else {
        return Err(Error::config("this stack was built without accounting"));
    };
    let result = async {
        let gated = accounting.get_keys(manager, identities, &request).await?;
        let mut keys = Vec::with_capacity(gated.len());
        for g in gated {
            g.reservation.commit(CallUsage::default()).await?;
            keys.push(g.key);
        }
        Ok(keys)
    }
    .await;
    let result = super::finish_accounting(accounting, result).await;
    super::finish(manager, result).await
}

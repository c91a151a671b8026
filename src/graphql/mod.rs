//! The GraphQL API (API.md): one schema merged from one module per domain.
//!
//! Queries read the projections (and wait for `minPosition` first); mutations run
//! one command each through the domain (`AppContext::domain`) and return the affected object — read from its
//! read model once that has applied the command's events — and the `position` of the
//! last event. The caller (tenant, subject, role) comes only from the verified token,
//! put into each request's data by the HTTP layer as a [`Caller`].

mod audit;
mod credentials;
mod digest;
mod environments;
pub mod error;
pub mod guard;
mod incidents;
pub(crate) mod inline;
pub use inline::{write_response, WrittenRaw};
mod mappings;
pub(crate) mod matrix;
mod pipelines;
mod policies;
mod promotions;
pub mod response_cache;
mod snapshots;
mod sync;
mod types;
mod webhooks;

use std::time::Duration;

use aggregates::Actor;
use async_graphql::{Context, MergedObject, Schema};

use crate::command::bus::CommandContext;
use crate::http::auth::Principal;
use crate::AppContext;
use eventstore::Store;

pub use audit::SubscriptionRoot;
pub use error::{ApiError, ApiResult};

/// Deepest selection accepted (GraphiQL's introspection query needs 13).
pub const MAX_DEPTH: usize = 16;
/// Most expensive query accepted: each field costs 1, list fields multiply their
/// children by their page size, and fields that walk or replay the event log cost
/// what [`guard::Expensive::complexity`] says (checked before validation:
/// [`guard`]).
pub const MAX_COMPLEXITY: usize = 20_000;
/// Longest a query waits for `minPosition` (and a payload for its object).
pub const READ_WAIT: Duration = Duration::from_secs(5);

#[derive(MergedObject, Default)]
pub struct QueryRoot(
    environments::EnvironmentQuery,
    matrix::MatrixQuery,
    incidents::IncidentQuery,
    promotions::PromotionQuery,
    pipelines::PipelineQuery,
    policies::PolicyQuery,
    audit::AuditQuery,
    credentials::CredentialQuery,
    snapshots::SnapshotQuery,
    digest::DigestQuery,
    webhooks::WebhookQuery,
);

// The order of the parts is the order of the fields in `schema.graphql`.
#[derive(MergedObject, Default)]
pub struct MutationRoot(
    environments::EnvironmentMutation,
    mappings::MappingMutation,
    incidents::IncidentMutation,
    promotions::PromotionMutation,
    pipelines::PipelineMutation,
    policies::PolicyMutation,
    promotions::PromotionStartMutation,
    sync::SyncMutation,
    credentials::CredentialMutation,
    webhooks::WebhookMutation,
);

pub type ApiSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The verified caller of one request (or one WebSocket connection).
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// One id per request: the correlation id of every event it causes, and the
    /// id a client quotes for an internal error.
    pub request_id: String,
}

impl Caller {
    pub fn tenant(&self) -> &str {
        self.principal.tenant.as_str()
    }

    pub fn command_context(&self) -> CommandContext {
        CommandContext {
            tenant: self.principal.tenant.clone(),
            actor: Actor::new(self.principal.subject.clone(), self.principal.role),
            correlation_id: self.request_id.clone(),
            causation_id: None,
        }
    }
}

/// The schema, with its limits and the [`guard`] as an extension (it parses,
/// checks and admits each operation): what the WebSocket transport runs. `context`
/// is `None` only to print the SDL.
pub fn schema(context: Option<AppContext>) -> ApiSchema {
    build(context, true)
}

/// The schema for `POST /graphql`, whose handler parses, checks and admits each
/// request itself before the schema sees it, and unwraps id errors after
/// ([`types::unwrap_id_errors`]). No extension: with one, async-graphql sends every
/// field of an answer through the extension chain (a registry lookup and a boxed
/// future per field), which was a large share of a 50 × 10 matrix page's CPU.
pub fn http_schema(context: AppContext) -> ApiSchema {
    build(Some(context), false)
}

/// Unwraps the errors of ids that did not parse (see [`types::unwrap_id_errors`]).
pub fn unwrap_id_errors(errors: &mut [async_graphql::ServerError]) {
    types::unwrap_id_errors(errors)
}

fn build(context: Option<AppContext>, guard: bool) -> ApiSchema {
    let mut builder = Schema::build(
        QueryRoot::default(),
        MutationRoot::default(),
        SubscriptionRoot,
    )
    .limit_depth(MAX_DEPTH)
    .limit_complexity(MAX_COMPLEXITY);
    if guard {
        builder = builder.extension(guard::Guard);
    }
    if let Some(context) = context {
        builder = builder.data(context);
    }
    builder.finish()
}

/// The schema as SDL: what `schema.graphql` holds.
pub fn sdl() -> String {
    schema(None).sdl()
}

/// The application context every resolver works with.
pub(crate) fn app<'a>(ctx: &Context<'a>) -> ApiResult<&'a AppContext> {
    ctx.data::<AppContext>().map_err(|_| ApiError::NoContext)
}

pub(crate) fn caller<'a>(ctx: &Context<'a>) -> ApiResult<&'a Caller> {
    ctx.data::<Caller>()
        .map_err(|_| ApiError::Unauthenticated("missing bearer token".into()))
}

/// Waits until `projection` has applied the event at `min_position` (read-your-writes).
pub(crate) async fn wait_for(
    ctx: &Context<'_>,
    projection: &str,
    min_position: Option<i64>,
) -> ApiResult<()> {
    if let Some(position) = min_position {
        if position < 0 {
            return Err(ApiError::validation("minPosition", "must not be negative"));
        }
        app(ctx)?
            .projections
            .wait_for(projection, position, READ_WAIT)
            .await?;
    }
    Ok(())
}

/// Batches the lookups of one request's nested objects (an incident's environment,
/// an environment's active incident, a deployment's promotion): one query per kind
/// per level of the response instead of one per item.
pub struct RowLoader<R> {
    store: Store,
    tenant: String,
    _row: std::marker::PhantomData<fn() -> R>,
}

impl<R: projections::sql::KeyedRow> async_graphql::dataloader::Loader<String> for RowLoader<R> {
    type Value = R;
    type Error = async_graphql::Error;

    async fn load(
        &self,
        keys: &[String],
    ) -> Result<std::collections::HashMap<String, R>, Self::Error> {
        let rows: Vec<R> = projections::query::by_ids(&self.store, &self.tenant, keys)
            .await
            .map_err(ApiError::from)?;
        Ok(rows
            .into_iter()
            .map(|row| (crate::http::feed::local_id(row.id()), row))
            .collect())
    }
}

pub type Loader<R> = async_graphql::dataloader::DataLoader<RowLoader<R>>;

/// A request's loaders, keyed by the caller's tenant.
pub struct Loaders {
    pub environments: Loader<projections::models::environments::EnvironmentRow>,
    pub incidents: Loader<projections::models::incidents::IncidentRow>,
    pub promotions: Loader<projections::models::promotions::PromotionRow>,
}

impl Loaders {
    pub fn new(store: &Store, tenant: &str) -> Loaders {
        fn loader<R: projections::sql::KeyedRow>(store: &Store, tenant: &str) -> Loader<R> {
            async_graphql::dataloader::DataLoader::new(
                RowLoader {
                    store: store.clone(),
                    tenant: tenant.to_string(),
                    _row: std::marker::PhantomData,
                },
                tokio::spawn,
            )
        }
        Loaders {
            environments: loader(store, tenant),
            incidents: loader(store, tenant),
            promotions: loader(store, tenant),
        }
    }
}

pub(crate) fn loaders<'a>(ctx: &Context<'a>) -> ApiResult<&'a Loaders> {
    ctx.data::<Loaders>()
        .map_err(|_| ApiError::Unauthenticated("missing bearer token".into()))
}

/// The id of an object a mutation creates when the client gives none: a new UUID.
pub(crate) fn new_id() -> ApiResult<aggregates::kernel::ids::LocalId> {
    Ok(aggregates::kernel::ids::LocalId::parse(
        uuid::Uuid::new_v4().to_string(),
    )?)
}

/// Runs one command of a mutation, counting its outcome by code for `/metrics`.
pub(crate) async fn run<T>(
    ctx: &Context<'_>,
    command: &'static str,
    future: impl std::future::Future<Output = ApiResult<T>>,
) -> ApiResult<T> {
    let result = future.await;
    let code = match &result {
        Ok(_) => "OK",
        Err(e) => e.code().as_str(),
    };
    if let Ok(app) = app(ctx) {
        app.metrics.command(command, code);
    }
    result
}

/// The object a mutation affected, read from `projection` once it has applied the
/// mutation's last event (`position`; `None` when the command changed nothing).
pub(crate) async fn read_back<T, F>(
    ctx: &Context<'_>,
    projection: &str,
    position: Option<i64>,
    read: F,
) -> ApiResult<T>
where
    F: std::future::Future<Output = ApiResult<T>>,
{
    wait_for(ctx, projection, position).await?;
    read.await
}

/// A mutation payload's row: waits until `projection` has applied `position` (the
/// mutation's), then takes the caller's row with this local id from the rows the
/// projector running in this process shared after its commit (decision 80), or
/// from the table when it keeps none for it (another process runs the projection,
/// or the row was not changed lately).
pub(crate) async fn read_back_row<R>(
    ctx: &Context<'_>,
    projection: &str,
    position: Option<i64>,
    local_id: &str,
) -> ApiResult<Option<R>>
where
    R: projections::sql::KeyedRow,
{
    wait_for(ctx, projection, position).await?;
    let app = app(ctx)?;
    let tenant = caller(ctx)?.tenant();
    let id = projections::query::row_id(tenant, local_id);
    if let Some(row) = app.projections.recent_row::<R>(projection, &id) {
        app.metrics.read_back("memory");
        return Ok(row);
    }
    app.metrics.read_back("table");
    Ok(projections::query::by_id(&app.store, tenant, local_id).await?)
}

/// Complexity of a paged list: its page size times what each item selects.
pub(crate) fn list_cost(first: Option<i32>, child_complexity: usize) -> usize {
    let items = first
        .unwrap_or(50)
        .clamp(1, projections::query::MAX_PAGE as i32) as usize;
    items.saturating_mul(child_complexity).saturating_add(1)
}

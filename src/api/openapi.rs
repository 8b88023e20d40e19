//! The routes and the OpenAPI document, built from one list: each handler
//! carries its `#[utoipa::path]` and is routed through utoipa-axum's
//! `routes!`, so a route cannot be served without being described, nor
//! described without being served. The document is at
//! `GET /api/v1/openapi.json` (no token needed: it holds no data).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{auth, downloads, files, ops, restore, snapshots, tasks, SharedApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cairn API",
        description = "Snapshots, downloads, status, jobs and operations of a cairn repository. Send `Authorization: Bearer TOKEN`; see docs/api.md."
    ),
    modifiers(&Bearer),
    tags(
        (name = "snapshots", description = "list, browse and download"),
        (name = "repository", description = "the snapshot × replica matrix"),
        (name = "jobs", description = "jobs of cairn.toml, their history, ad-hoc backups"),
        (name = "operations", description = "restore, check, forget"),
        (name = "tasks", description = "following what was started")
    )
)]
struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route under `/api/v1`, with its description: all but the
/// download by ticket need a bearer token.
pub fn routes(api: SharedApi) -> OpenApiRouter {
    let v1 = OpenApiRouter::new()
        .routes(routes!(snapshots::list))
        .routes(routes!(snapshots::get))
        .routes(routes!(snapshots::tree))
        .routes(routes!(files::file))
        .routes(routes!(files::archive))
        .routes(routes!(downloads::issue))
        .routes(routes!(ops::status))
        .routes(routes!(ops::jobs))
        .routes(routes!(ops::history))
        .routes(routes!(ops::run_job))
        .routes(routes!(ops::backup))
        .routes(routes!(tasks::get))
        .routes(routes!(restore::restore))
        .routes(routes!(ops::check))
        .routes(routes!(ops::forget))
        .routes(routes!(tasks::events))
        .route_layer(axum::middleware::from_fn_with_state(
            api.clone(),
            auth::require,
        ))
        // After the layer, so outside it: the ticket is the credential.
        .routes(routes!(downloads::fetch))
        .with_state(api);
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest("/api/v1", v1)
}

//! The OpenAPI document, generated from the route annotations, and
//! `/openapi.json` serving it.

use super::error::{ErrorBody, ErrorDetail};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ledger",
        description = "Event-sourced, hash-chained ledger: subscriptions, grants and quota consumption."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Security),
    tags(
        (name = "tenants", description = "Tenants and API keys (admin token)"),
        (name = "streams", description = "The tenant's event streams"),
        (name = "subscription", description = "The tenant's subscription and its plan's grants"),
        (name = "grants", description = "Grants of quota and their balances"),
        (name = "quota", description = "Consuming, allocating and reading quota"),
        (name = "journal", description = "Journal entries, account balances, trial balance"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A tenant's API key"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The server's LEDGER_ADMIN_TOKEN"))
                    .build(),
            ),
        );
    }
}

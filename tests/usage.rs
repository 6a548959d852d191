//! The layer as users wire it: every way of attaching it, optional mode, the extractors, custom
//! responses, and principals that only the layer can create.

mod common;

use std::convert::Infallible;

use axum::body::Body;
use axum::handler::Handler;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_api_key::{
    ApiKeyLayer, Environment, InvalidKey, KeyFormat, KeyStore, MemoryStore, NewKey, Principal,
    PrincipalRejection, Rejection, RequireScopes, Scope, ScopeCatalog, Scoped,
};

const ORDERS_READ: Scope = Scope::from_static("orders:read");
const ANALYTICS_READ: Scope = Scope::from_static("analytics:read");
const PRODUCTS_WRITE: Scope = Scope::from_static("products:write");

struct Keys {
    store: MemoryStore,
    orders: String,
    analytics: String,
    sandbox: String,
}

async fn keys() -> Keys {
    common::init_tracing();
    let store = MemoryStore::new(KeyFormat::new("om").unwrap());
    let mut created = Vec::new();
    for (name, environment, scope) in [
        ("Orders", Environment::Live, ORDERS_READ),
        ("Analytics", Environment::Live, ANALYTICS_READ),
        ("Sandbox", Environment::Test, ORDERS_READ),
    ] {
        let new = NewKey::new(name, environment)
            .owner("acct_7")
            .scopes([scope]);
        let key = store.create(new).await.unwrap().key;
        created.push(key.expose_secret().to_owned());
    }
    let [orders, analytics, sandbox] = <[String; 3]>::try_from(created).unwrap();
    Keys {
        orders,
        analytics,
        sandbox,
        store,
    }
}

fn layer(keys: &Keys) -> ApiKeyLayer {
    ApiKeyLayer::new(keys.store.clone())
}

fn request(path: &str, authorization: Option<&str>) -> Request<Body> {
    let mut builder = Request::get(path);
    if let Some(value) = authorization {
        builder = builder.header(header::AUTHORIZATION, value);
    }
    builder.body(Body::empty()).unwrap()
}

async fn call(app: &Router, path: &str, authorization: Option<&str>) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(request(path, authorization))
        .await
        .unwrap();
    (response.status(), text(response).await)
}

/// The body of `response`, as text.
async fn text(response: Response<Body>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn name(principal: Principal) -> String {
    principal.name().to_owned()
}

#[tokio::test]
async fn route_layer_handler_layer_and_service_builder() {
    let keys = keys().await;
    let app = Router::new()
        .route(
            "/orders",
            get(name).route_layer(RequireScopes::all([ORDERS_READ])),
        )
        .route(
            "/analytics",
            get(name.layer(RequireScopes::all([ANALYTICS_READ]))),
        )
        .route(
            "/either",
            get(name).route_layer(RequireScopes::any([ORDERS_READ, ANALYTICS_READ])),
        )
        .layer(ServiceBuilder::new().layer(layer(&keys)));
    let orders = bearer(&keys.orders);
    let analytics = bearer(&keys.analytics);
    assert_eq!(
        call(&app, "/orders", Some(&orders)).await,
        (StatusCode::OK, "Orders".into())
    );
    assert_eq!(
        call(&app, "/orders", Some(&analytics)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&app, "/analytics", Some(&analytics)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&app, "/analytics", Some(&orders)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&app, "/either", Some(&orders)).await.0, StatusCode::OK);
    assert_eq!(
        call(&app, "/either", Some(&analytics)).await.0,
        StatusCode::OK
    );
    // An unmatched route is still behind the layer.
    assert_eq!(
        call(&app, "/nowhere", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    common::assert_logs_clean(&[&keys.orders, &keys.analytics, &keys.sandbox]);
}

#[tokio::test]
async fn any_of_requirement_names_every_alternative_in_the_challenge() {
    let keys = keys().await;
    let app = Router::new()
        .route(
            "/either",
            get(name).route_layer(RequireScopes::any([PRODUCTS_WRITE, ANALYTICS_READ])),
        )
        .layer(layer(&keys));
    let response = app
        .oneshot(request("/either", Some(&bearer(&keys.orders))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="api", error="insufficient_scope", scope="analytics:read products:write""#
    );
    common::assert_logs_clean(&[&keys.orders]);
}

#[tokio::test]
async fn router_route_layer_guards_the_routes_registered_before_it() {
    let keys = keys().await;
    let app = Router::new()
        .route("/public", get(|| async { "public" }))
        .route("/private", get(name))
        .route_layer(ApiKeyLayer::new(keys.store.clone()));
    // `Router::route_layer` guards every route registered before it.
    assert_eq!(
        call(&app, "/public", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "/private", Some(&bearer(&keys.orders))).await.0,
        StatusCode::OK
    );

    // To guard only some routes: `route_layer` after them, or the layer on their handlers.
    let guarded_before = Router::new()
        .route("/private", get(name))
        .route_layer(layer(&keys))
        .route("/public", get(|| async { "public" }));
    let guarded_handler = Router::new()
        .route("/private", get(name.layer(layer(&keys))))
        .route("/public", get(|| async { "public" }));
    for app in [guarded_before, guarded_handler] {
        assert_eq!(
            call(&app, "/public", None).await,
            (StatusCode::OK, "public".into())
        );
        assert_eq!(
            call(&app, "/private", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&app, "/private", Some(&bearer(&keys.orders))).await,
            (StatusCode::OK, "Orders".into())
        );
    }
    common::assert_logs_clean(&[&keys.orders]);
}

#[tokio::test]
async fn any_tower_service_with_any_bytes_body() {
    let keys = keys().await;
    let service = ServiceBuilder::new().layer(layer(&keys)).service_fn(
        |request: Request<Full<Bytes>>| async move {
            let name = request
                .extensions()
                .get::<Principal>()
                .unwrap()
                .name()
                .to_owned();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
        },
    );
    let request = |authorization: Option<String>| {
        let mut builder = Request::post("/rpc");
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder
            .body(Full::new(Bytes::from_static(b"payload")))
            .unwrap()
    };
    let ok = service
        .clone()
        .oneshot(request(Some(bearer(&keys.sandbox))))
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.into_body().collect().await.unwrap().to_bytes(),
        "Sandbox"
    );
    let refused = service.oneshot(request(None)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        refused.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="api""#
    );
}

#[tokio::test]
async fn optional_mode_lets_anonymous_requests_through_but_not_bad_keys() {
    let keys = keys().await;
    async fn greet(principal: Option<Principal>) -> String {
        match principal {
            Some(principal) => format!("hello {}", principal.name()),
            None => "hello stranger".to_owned(),
        }
    }
    let app = Router::new()
        .route("/greet", get(greet))
        .route("/me", get(name))
        .route(
            "/orders",
            get(name).route_layer(RequireScopes::all([ORDERS_READ])),
        )
        .layer(
            ApiKeyLayer::builder(keys.store.clone())
                .optional()
                .realm("OrderMonk API")
                .build(),
        );
    let orders = bearer(&keys.orders);
    assert_eq!(
        call(&app, "/greet", None).await,
        (StatusCode::OK, "hello stranger".into())
    );
    assert_eq!(
        call(&app, "/greet", Some("Basic dXNlcg==")).await.1,
        "hello stranger"
    );
    assert_eq!(call(&app, "/greet", Some(&orders)).await.1, "hello Orders");

    // Bad credentials are refused even in optional mode.
    let unknown = KeyFormat::new("om")
        .unwrap()
        .generate(Environment::Live)
        .unwrap();
    assert_eq!(
        call(&app, "/greet", Some(&bearer(unknown.expose_secret())))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&app, "/greet", Some("Bearer")).await.0,
        StatusCode::BAD_REQUEST
    );

    // Routes that need a principal answer anonymous requests with the layer's 401.
    for path in ["/me", "/orders"] {
        let response = app.clone().oneshot(request(path, None)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="OrderMonk API""#
        );
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
    assert_eq!(call(&app, "/orders", Some(&orders)).await.0, StatusCode::OK);
    common::assert_logs_clean(&[&keys.orders, unknown.expose_secret()]);
}

#[tokio::test]
async fn extractors_without_the_layer_answer_500_naming_it() {
    let app = Router::new()
        .route("/me", get(name))
        .route(
            "/maybe",
            get(|p: Option<Principal>| async move { format!("{}", p.is_some()) }),
        )
        .route(
            "/scoped",
            get(|| async { "ran" }).route_layer(RequireScopes::all([ORDERS_READ])),
        );
    for path in ["/me", "/maybe"] {
        let (status, body) = call(&app, path, Some("Bearer whatever")).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains("`Principal` was not found"), "{body}");
        assert!(body.contains("ApiKeyLayer"), "{body}");
    }
    let (status, body) = call(&app, "/scoped", None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("ApiKeyLayer"), "{body}");
}

#[tokio::test]
async fn nothing_a_client_sends_creates_or_changes_a_principal() {
    let keys = keys().await;
    async fn show(principal: Option<Principal>) -> String {
        format!("{principal:?}")
    }
    let app = Router::new()
        .route("/show", get(show))
        .layer(ApiKeyLayer::builder(keys.store.clone()).optional().build());
    let mut forged = request(
        "/show?principal=admin&key_id=key_1&scopes=orders:read",
        None,
    );
    for (name, value) in [
        ("principal", "admin"),
        ("x-principal", "admin"),
        ("key-id", "key_1"),
        ("x-api-key", keys.orders.as_str()),
        ("x-environment", "live"),
        ("scopes", "orders:read products:write"),
    ] {
        forged.headers_mut().insert(name, value.parse().unwrap());
    }
    let response = app.clone().oneshot(forged).await.unwrap();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "None");

    // A real key's principal carries exactly what the store holds, whatever else is sent.
    let mut with_key = request("/show", Some(&bearer(&keys.sandbox)));
    with_key
        .headers_mut()
        .insert("x-environment", "live".parse().unwrap());
    with_key
        .headers_mut()
        .insert("x-scopes", "products:write".parse().unwrap());
    let text = text(app.oneshot(with_key).await.unwrap()).await;
    assert!(text.contains("environment: Test"), "{text}");
    assert!(text.contains(r#"scopes: {"orders:read"}"#), "{text}");
    assert!(!text.contains(&keys.sandbox), "{text}");
    common::assert_logs_clean(&[&keys.orders, &keys.sandbox]);
}

#[tokio::test]
async fn custom_responder_gets_the_cause_and_the_layer_keeps_the_contract_headers() {
    let keys = keys().await;
    let app = Router::new().route("/", get(name)).layer(
        ApiKeyLayer::builder(keys.store.clone())
            .realm("Custom")
            .responder(|rejection: &Rejection| {
                Response::builder()
                    .status(rejection.status())
                    .body(Bytes::from(format!("code={:?}", rejection.error_code())))
                    .unwrap()
            })
            .build(),
    );
    let unknown = KeyFormat::new("om")
        .unwrap()
        .generate(Environment::Live)
        .unwrap();
    let response = app
        .clone()
        .oneshot(request("/", Some(&bearer(unknown.expose_secret()))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="Custom", error="invalid_token""#
    );
    // The cause is there for outer layers, not for the client.
    let cause = response.extensions().get::<Rejection>().unwrap();
    assert!(
        matches!(cause, Rejection::InvalidKey(InvalidKey::Unknown)),
        "{cause:?}"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, r#"code=Some("invalid_token")"#);

    let (status, body) = call(&app, "/", Some(&bearer(&keys.orders))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "Orders"));
    common::assert_logs_clean(&[&keys.orders, unknown.expose_secret()]);
}

/// What an outer layer puts in every request.
#[derive(Clone)]
struct RequestMarker;

/// What a custom responder puts in its responses.
#[derive(Clone)]
struct ResponderMarker;

#[tokio::test]
async fn a_refusal_carries_its_rejection_and_the_responders_extensions_and_nothing_of_the_request()
{
    let keys = keys().await;
    let unknown = KeyFormat::new("om")
        .unwrap()
        .generate(Environment::Live)
        .unwrap();
    let unknown = bearer(unknown.expose_secret());
    for custom in [false, true] {
        let mut builder = ApiKeyLayer::builder(keys.store.clone());
        if custom {
            builder = builder.responder(|rejection: &Rejection| {
                let mut response = Response::new(Bytes::from_static(b"refused"));
                *response.status_mut() = rejection.status();
                response.extensions_mut().insert(ResponderMarker);
                response
            });
        }
        let app = Router::new()
            .route("/", get(name))
            .layer(builder.build())
            .layer(axum::Extension(RequestMarker));
        // Missing, malformed, and an unknown key twice: once answered by the resolver, once by
        // the cache.
        for authorization in [
            None,
            Some("Bearer om_live_x"),
            Some(&*unknown),
            Some(&*unknown),
        ] {
            let response = app
                .clone()
                .oneshot(request("/", authorization))
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{authorization:?}"
            );
            let extensions = response.extensions();
            assert!(extensions.get::<Rejection>().is_some(), "{authorization:?}");
            assert!(extensions.get::<RequestMarker>().is_none());
            assert!(extensions.get::<axum::extract::MatchedPath>().is_none());
            assert_eq!(extensions.get::<ResponderMarker>().is_some(), custom);
        }
    }
}

#[tokio::test]
async fn environments_can_be_restricted() {
    let keys = keys().await;
    let sandbox_only = Router::new().route("/", get(name)).layer(
        ApiKeyLayer::builder(keys.store.clone())
            .environments([Environment::Test])
            .build(),
    );
    assert_eq!(
        call(&sandbox_only, "/", Some(&bearer(&keys.sandbox)))
            .await
            .0,
        StatusCode::OK
    );
    let response = sandbox_only
        .oneshot(request("/", Some(&bearer(&keys.orders))))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let cause = response.extensions().get::<Rejection>().unwrap();
    assert!(
        matches!(
            cause,
            Rejection::InvalidKey(InvalidKey::WrongEnvironment(Environment::Live))
        ),
        "{cause:?}"
    );
}

#[tokio::test]
async fn the_authorization_header_is_marked_sensitive_for_inner_layers() {
    let keys = keys().await;
    let app = Router::new()
        .route(
            "/",
            post(|headers: http::HeaderMap| async move { format!("{headers:?}") }),
        )
        .layer(layer(&keys));
    let mut req = request("/", Some(&bearer(&keys.orders)));
    *req.method_mut() = http::Method::POST;
    let text = text(app.oneshot(req).await.unwrap()).await;
    assert!(text.contains(r#""authorization": Sensitive"#), "{text}");
    assert!(!text.contains(&keys.orders));
}

#[test]
fn a_catalogue_catches_misspelt_scopes_when_the_router_is_built() {
    let catalog = ScopeCatalog::new([ORDERS_READ, ANALYTICS_READ, PRODUCTS_WRITE]);
    let build = |names: &'static [&'static str]| -> Result<Router, String> {
        let requirement = catalog
            .require_all(names.iter().copied())
            .map_err(|e| e.to_string())?;
        Ok(Router::new().route(
            "/",
            get(|| async { "" }).route_layer(RequireScopes::new(requirement)),
        ))
    };
    assert!(build(&["orders:read"]).is_ok());
    assert_eq!(
        build(&["order:read"]).unwrap_err(),
        "unknown scope `order:read`; this deployment defines: analytics:read orders:read products:write"
    );
}

#[test]
#[should_panic(expected = "RequireScopes::all needs at least one scope")]
fn an_empty_requirement_is_refused_when_the_router_is_built() {
    let _ = RequireScopes::all([]);
}

tower_api_key::scope_requirement! {
    /// Reading orders.
    struct ReadOrders = all(ORDERS_READ);
}

tower_api_key::scope_requirement! {
    /// Either report.
    struct Reports = any(ORDERS_READ, ANALYTICS_READ);
}

#[tokio::test]
async fn the_scoped_extractor_answers_like_require_scopes() {
    let keys = keys().await;
    async fn orders(principal: Scoped<ReadOrders>) -> String {
        principal.name().to_owned()
    }
    async fn reports(principal: Scoped<Reports>) -> String {
        principal.into_inner().name().to_owned()
    }
    let routes = || {
        Router::new()
            .route("/orders", get(orders))
            .route("/reports", get(reports))
            .route(
                "/layered",
                get(name).route_layer(RequireScopes::all([ORDERS_READ])),
            )
    };
    let app = routes().layer(layer(&keys));
    let orders_key = bearer(&keys.orders);
    let analytics_key = bearer(&keys.analytics);
    assert_eq!(
        call(&app, "/orders", Some(&orders_key)).await,
        (StatusCode::OK, "Orders".into())
    );
    assert_eq!(
        call(&app, "/reports", Some(&analytics_key)).await,
        (StatusCode::OK, "Analytics".into())
    );

    // A refusal is byte for byte the one `RequireScopes` gives.
    let refused = |path: &'static str| {
        let app = app.clone();
        let key = analytics_key.clone();
        async move { app.oneshot(request(path, Some(&key))).await.unwrap() }
    };
    let (extracted, layered) = (refused("/orders").await, refused("/layered").await);
    assert_eq!(extracted.status(), StatusCode::FORBIDDEN);
    assert_eq!(extracted.headers(), layered.headers());
    assert_eq!(
        extracted.headers()[header::WWW_AUTHENTICATE],
        r#"Bearer realm="api", error="insufficient_scope", scope="orders:read""#
    );
    assert!(extracted.extensions().get::<Rejection>().is_some());
    let body = |response: Response<Body>| async {
        response.into_body().collect().await.unwrap().to_bytes()
    };
    assert_eq!(body(extracted).await, body(layered).await);

    // Anonymous behind an optional layer: 401; no layer at all: 500.
    let optional = routes().layer(ApiKeyLayer::builder(keys.store.clone()).optional().build());
    assert_eq!(
        call(&optional, "/orders", None).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, text) = call(&routes(), "/orders", Some(&orders_key)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(text.contains("ApiKeyLayer"), "{text}");
    common::assert_logs_clean(&[&keys.orders, &keys.analytics]);
}

#[tokio::test]
async fn extractor_rejections_are_typed_and_a_handler_can_answer_them_itself() {
    let keys = keys().await;
    // The handler takes the rejection and says which kind it was, rather than letting it answer.
    async fn which(scoped: Result<Scoped<ReadOrders>, PrincipalRejection>) -> String {
        match scoped {
            Ok(principal) => format!("ok {}", principal.name()),
            Err(PrincipalRejection::Refused(refused)) => match refused.rejection() {
                Rejection::InsufficientScope(insufficient) => format!(
                    "{} missing {:?}",
                    refused.status().as_u16(),
                    insufficient
                        .missing()
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                ),
                Rejection::MissingCredentials => format!("{} anonymous", refused.status().as_u16()),
                other => format!("unexpected {other:?}"),
            },
            Err(PrincipalRejection::MissingLayer(missing)) => {
                format!("{} no layer", missing.status().as_u16())
            }
            Err(other) => format!("unexpected {other:?}"),
        }
    }
    let routes = || Router::new().route("/which", get(which));
    let app = routes().layer(ApiKeyLayer::builder(keys.store.clone()).optional().build());
    assert_eq!(
        call(&app, "/which", Some(&bearer(&keys.orders))).await,
        (StatusCode::OK, "ok Orders".into())
    );
    assert_eq!(
        call(&app, "/which", Some(&bearer(&keys.analytics))).await,
        (StatusCode::OK, r#"403 missing ["orders:read"]"#.into())
    );
    assert_eq!(
        call(&app, "/which", None).await,
        (StatusCode::OK, "401 anonymous".into())
    );
    assert_eq!(
        call(&routes(), "/which", Some(&bearer(&keys.orders))).await,
        (StatusCode::OK, "500 no layer".into())
    );
    common::assert_logs_clean(&[&keys.orders, &keys.analytics]);
}

#[tokio::test]
async fn a_custom_responder_answers_the_403_of_scope_checks_too() {
    let keys = keys().await;
    let app = Router::new()
        .route("/scoped", get(|_: Scoped<ReadOrders>| async { "ran" }))
        .route(
            "/layered",
            get(|| async { "ran" }).route_layer(RequireScopes::all([ORDERS_READ])),
        )
        .layer(
            ApiKeyLayer::builder(keys.store.clone())
                .responder(|rejection: &Rejection| {
                    let mut response = Response::new(Bytes::from(format!(
                        "custom {}",
                        rejection.error_code().unwrap_or("none")
                    )));
                    *response.status_mut() = rejection.status();
                    response
                })
                .build(),
        );
    for path in ["/scoped", "/layered"] {
        let response = app
            .clone()
            .oneshot(request(path, Some(&bearer(&keys.analytics))))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            r#"Bearer realm="api", error="insufficient_scope", scope="orders:read""#
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"custom insufficient_scope", "{path}");
    }
    common::assert_logs_clean(&[&keys.analytics]);
}

#[test]
fn services_give_access_to_the_service_they_wrap() {
    let store = MemoryStore::new(KeyFormat::new("om").unwrap());
    let mut service = ApiKeyLayer::new(store).layer(41_u32);
    *service.get_mut() += 1;
    assert_eq!(*service.get_ref(), 42);
    assert_eq!(service.into_inner(), 42);

    let mut scoped = RequireScopes::all([ORDERS_READ]).layer(String::from("inner"));
    scoped.get_mut().push('!');
    assert_eq!(scoped.get_ref(), "inner!");
    assert_eq!(scoped.requirement().to_string(), "orders:read");
    assert_eq!(scoped.into_inner(), "inner!");
}

#[tokio::test]
async fn a_layer_built_on_a_store_accepts_keys_of_the_stores_format() {
    common::init_tracing();
    // A store of another prefix than the demo's: the layer needs no format of its own, so it
    // cannot be given one that differs.
    let store = MemoryStore::new(KeyFormat::new("acme").unwrap());
    let created = store
        .create(NewKey::new("Production", Environment::Live))
        .await
        .unwrap();
    let key = created.key.expose_secret().to_owned();
    assert!(key.starts_with("acme_live_"));
    let app = Router::new()
        .route("/me", get(name))
        .layer(ApiKeyLayer::new(store));
    assert_eq!(
        call(&app, "/me", Some(&bearer(&key))).await,
        (StatusCode::OK, "Production".into())
    );
    common::assert_logs_clean(&[&key]);
}

//! The claims of SECURITY.md that no other test file backs: what `Router::layer` covers, path
//! tricks around route layers, what a stolen database or a forged row gives an attacker, and
//! what reaches rejections, challenges and hints. Each test names the claim it backs.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::handler::Handler;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_api_key::ManualClock;
use tower_api_key::{
    ApiKeyLayer, Environment, KeyDigest, KeyFormat, KeyRecord, KeyStore, MemoryStore, NewKey,
    Rejection, RequireScopes, ResolveError, Scope, ScopeSet,
};

const PRODUCTS_READ: Scope = Scope::from_static("products:read");
const PRODUCTS_WRITE: Scope = Scope::from_static("products:write");
const ORDERS_READ: Scope = Scope::from_static("orders:read");

/// Paths that a lenient server, proxy or file system might take for `/v1/products`.
const TRICKS: [&str; 5] = [
    "/v1/products/",
    "//v1/products",
    "/V1/products",
    "/v1/%70roducts",
    "/v1/./products",
];

fn format() -> KeyFormat {
    KeyFormat::new("om").unwrap()
}

struct Keys {
    store: MemoryStore,
    /// Holds `products:read`.
    reader: String,
    /// Holds `orders:read` only.
    other: String,
}

async fn keys() -> Keys {
    common::init_tracing();
    let store = MemoryStore::new(format());
    let create = |name: &str, scope: Scope| {
        let new = NewKey::new(name, Environment::Live).scopes([scope]);
        let store = store.clone();
        async move {
            let created = store.create(new).await.unwrap();
            created.key.expose_secret().to_owned()
        }
    };
    let reader = create("Reader", PRODUCTS_READ).await;
    let other = create("Orders", ORDERS_READ).await;
    Keys {
        store,
        reader,
        other,
    }
}

async fn call_as(app: &Router, method: Method, path: &str, key: Option<&str>) -> (u16, String) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header(AUTHORIZATION, format!("Bearer {key}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn call(app: &Router, path: &str, key: Option<&str>) -> (u16, String) {
    call_as(app, Method::GET, path, key).await
}

/// A handler that counts its runs.
fn counted(runs: &Arc<AtomicUsize>, answer: &'static str) -> impl Handler<((),), ()> {
    let runs = runs.clone();
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        async move { answer }
    }
}

/// Claim: behind `Router::layer`, every path, matched or not, needs a key; axum matches paths
/// exactly (no trailing-slash, `//`, case or percent-decoding leniency), so a trick path never
/// reaches a scoped handler: it gets `401` without a key and `404` with any key.
#[tokio::test]
async fn router_layer_guards_every_path_and_trick_paths_reach_no_handler() {
    let keys = keys().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/v1/products",
            get(counted(&runs, "products")).route_layer(RequireScopes::all([PRODUCTS_READ])),
        )
        .layer(ApiKeyLayer::new(keys.store.clone()));

    assert_eq!(call(&app, "/v1/products", None).await.0, 401);
    assert_eq!(call(&app, "/v1/products", Some(&keys.other)).await.0, 403);
    assert_eq!(
        call(&app, "/v1/products?scope=products:read", Some(&keys.other))
            .await
            .0,
        403
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert_eq!(
        call(&app, "/v1/products", Some(&keys.reader)).await,
        (200, "products".into())
    );

    for path in TRICKS.iter().chain(&["/nowhere"]) {
        assert_eq!(call(&app, path, None).await.0, 401, "{path}");
        assert_eq!(call(&app, path, Some(&keys.other)).await.0, 404, "{path}");
        assert_eq!(call(&app, path, Some(&keys.reader)).await.0, 404, "{path}");
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "only the exact path ran the handler"
    );
    common::assert_logs_clean(&[&keys.reader, &keys.other]);
}

/// Claim: `Router::route_layer` guards only the routes that match; unmatched paths, and so a
/// fallback, are not authenticated. A fallback that serves or forwards trick paths is reachable
/// without any key.
#[tokio::test]
async fn route_layer_leaves_unmatched_paths_and_the_fallback_unauthenticated() {
    let keys = keys().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/v1/products", get(counted(&runs, "products")))
        .route_layer(ApiKeyLayer::new(keys.store.clone()));
    assert_eq!(call(&app, "/v1/products", None).await.0, 401);
    for path in TRICKS {
        // Unmatched: axum's default 404, without authentication.
        assert_eq!(call(&app, path, None).await.0, 404, "{path}");
    }

    let with_fallback = app.fallback(counted(&runs, "fallback"));
    for path in TRICKS {
        assert_eq!(
            call(&with_fallback, path, None).await,
            (200, "fallback".into()),
            "{path}"
        );
    }
    assert_eq!(call(&with_fallback, "/v1/products", None).await.0, 401);
    assert_eq!(runs.load(Ordering::SeqCst), TRICKS.len());
}

/// The challenge sent with a `401` to a request without credentials, under the default realm.
const CHALLENGE: &str = r#"Bearer realm="api""#;

/// Sends `GET path` to any service, with `key` as a bearer token if given: the status, every
/// `WWW-Authenticate` value as bytes, and the body.
async fn probe<S>(service: &S, path: &str, key: Option<&str>) -> (u16, Vec<Bytes>, String)
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone,
{
    let mut request = Request::get(path);
    if let Some(key) = key {
        request = request.header(AUTHORIZATION, format!("Bearer {key}"));
    }
    let response = service
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let challenges = response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .map(|value| Bytes::copy_from_slice(value.as_bytes()))
        .collect();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    (status, challenges, body)
}

/// Claim: `Router::layer(ApiKeyLayer)` covers only what the router holds when it is called.
/// Under axum 0.8 a route or a method added after it, a router merged or nested after it, and a
/// fallback set after it answer without any key. Merging after it also swaps the layered
/// default fallback for the merged router's own, so unmatched paths answer `404` instead of
/// `401`, without a key.
#[tokio::test]
async fn routes_merges_nests_and_fallbacks_added_after_router_layer_need_no_key() {
    let keys = keys().await;
    let guarded = || {
        Router::new()
            .route("/v1/products", get(|| async { "products" }))
            .layer(ApiKeyLayer::new(keys.store.clone()))
    };
    // What the router held when `.layer` was called stays guarded, unmatched paths included.
    assert_eq!(call(&guarded(), "/v1/products", None).await.0, 401);
    assert_eq!(call(&guarded(), "/nowhere", None).await.0, 401);

    let route_after = guarded()
        .route("/v1/orders", get(|| async { "orders" }))
        .route("/v1/products", post(|| async { "created" }));
    assert_eq!(
        call(&route_after, "/v1/orders", None).await,
        (200, "orders".into())
    );
    // A method added after the layer to a guarded path: `GET` needs a key, `POST` does not.
    assert_eq!(
        call_as(&route_after, Method::POST, "/v1/products", None).await,
        (200, "created".into())
    );
    assert_eq!(call(&route_after, "/v1/products", None).await.0, 401);
    assert_eq!(call(&route_after, "/nowhere", None).await.0, 401);

    let merged_after =
        guarded().merge(Router::new().route("/v1/invoices", get(|| async { "invoices" })));
    assert_eq!(
        call(&merged_after, "/v1/invoices", None).await,
        (200, "invoices".into())
    );
    assert_eq!(call(&merged_after, "/v1/products", None).await.0, 401);
    // The merged router's unlayered fallback now answers unmatched paths.
    assert_eq!(call(&merged_after, "/nowhere", None).await.0, 404);

    let nested_after = guarded().nest(
        "/admin",
        Router::new().route("/users", get(|| async { "users" })),
    );
    assert_eq!(
        call(&nested_after, "/admin/users", None).await,
        (200, "users".into())
    );
    assert_eq!(call(&nested_after, "/v1/products", None).await.0, 401);
    assert_eq!(call(&nested_after, "/nowhere", None).await.0, 401);

    let fallback_after = guarded().fallback(|| async { "fallback" });
    for path in TRICKS.iter().chain(&["/nowhere"]) {
        assert_eq!(
            call(&fallback_after, path, None).await,
            (200, "fallback".into()),
            "{path}"
        );
    }
    assert_eq!(call(&fallback_after, "/v1/products", None).await.0, 401);
}

/// An API with a route, a merged router, a nested router and a fallback, each answering its
/// name and counting its runs.
fn whole_api(runs: &Arc<AtomicUsize>) -> Router {
    Router::new()
        .route("/v1/products", get(counted(runs, "products")))
        .merge(Router::new().route("/v1/invoices", get(counted(runs, "invoices"))))
        .nest(
            "/admin",
            Router::new().route("/users", get(counted(runs, "users"))),
        )
        .fallback(counted(runs, "fallback"))
}

/// Claim: with `Router::layer(ApiKeyLayer)` applied after every route, merge, nest and fallback,
/// or with the layer wrapped around the finished router from outside, every piece needs a key,
/// a path no route matches included: without one it gets `401` with the bare challenge and no
/// handler runs; with one it gets the piece's answer.
#[tokio::test]
async fn a_layer_applied_last_or_around_the_router_guards_every_piece() {
    let keys = keys().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let layer = ApiKeyLayer::new(keys.store.clone());
    let applied_last = whole_api(&runs).layer(layer.clone());
    let service_builder = ServiceBuilder::new()
        .layer(layer.clone())
        .service(whole_api(&runs));
    let wrapped = Layer::layer(&layer, whole_api(&runs));
    let pieces = [
        ("/v1/products", "products"),
        ("/v1/invoices", "invoices"),
        ("/admin/users", "users"),
        // Unmatched paths, a trick path among them, go to the fallback.
        ("/admin/nowhere", "fallback"),
        ("/v1/products/", "fallback"),
        ("/nowhere", "fallback"),
    ];
    let challenge = vec![Bytes::from_static(CHALLENGE.as_bytes())];
    for (path, _) in pieces {
        let without_key = [
            probe(&applied_last, path, None).await,
            probe(&service_builder, path, None).await,
            probe(&wrapped, path, None).await,
        ];
        for (status, challenges, _) in without_key {
            assert_eq!((status, challenges), (401, challenge.clone()), "{path}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 0, "{path} ran without a key");
    }
    for (path, answer) in pieces {
        let with_key = [
            probe(&applied_last, path, Some(&keys.reader)).await,
            probe(&service_builder, path, Some(&keys.reader)).await,
            probe(&wrapped, path, Some(&keys.reader)).await,
        ];
        for reply in with_key {
            assert_eq!(reply, (200, vec![], answer.to_owned()), "{path}");
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3 * pieces.len());
    common::assert_logs_clean(&[&keys.reader, &keys.other]);
}

/// A path normaliser for the test: drops trailing slashes and collapses repeated ones.
fn normalise<B>(mut request: Request<B>) -> Request<B> {
    let path = request.uri().path();
    let mut clean = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        clean.push('/');
        clean.push_str(segment);
    }
    if clean.is_empty() {
        clean.push('/');
    }
    let query = request
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    *request.uri_mut() = Uri::try_from(format!("{clean}{query}")).unwrap();
    request
}

/// Claim: path normalisation must wrap the whole router; then a normalised path meets the
/// route's authentication and scopes. Added with `Router::layer` it runs after routing and
/// changes nothing.
#[tokio::test]
async fn normalising_paths_outside_the_router_keeps_scopes_in_force() {
    let keys = keys().await;
    let router = Router::new()
        .route(
            "/v1/products",
            get(|| async { "products" }).route_layer(RequireScopes::all([PRODUCTS_READ])),
        )
        .layer(ApiKeyLayer::new(keys.store.clone()));
    let outside = tower::util::MapRequestLayer::new(normalise::<Body>).layer(router.clone());
    let outside = Router::new().fallback_service(outside);
    for path in ["/v1/products/", "//v1/products", "/v1//products//"] {
        assert_eq!(call(&outside, path, None).await.0, 401, "{path}");
        assert_eq!(
            call(&outside, path, Some(&keys.other)).await.0,
            403,
            "{path}"
        );
        assert_eq!(
            call(&outside, path, Some(&keys.reader)).await,
            (200, "products".into()),
            "{path}"
        );
    }

    let inside = router.layer(tower::util::MapRequestLayer::new(normalise::<Body>));
    assert_eq!(
        call(&inside, "/v1/products/", Some(&keys.reader)).await.0,
        404
    );
    common::assert_logs_clean(&[&keys.reader, &keys.other]);
}

/// Claim: `MethodRouter::route_layer` guards only the methods registered before it; a method
/// added after it is authenticated by the outer `ApiKeyLayer` but not scope-checked. Layering
/// each handler avoids the trap.
#[tokio::test]
async fn a_method_added_after_method_route_layer_is_not_scope_checked() {
    let keys = keys().await;
    let app = Router::new()
        .route(
            "/v1/products",
            get(|| async { "list" })
                .route_layer(RequireScopes::all([PRODUCTS_READ]))
                .post(|| async { "created" }),
        )
        .route(
            "/v2/products",
            get((|| async { "list" }).layer(RequireScopes::all([PRODUCTS_READ])))
                .post((|| async { "created" }).layer(RequireScopes::all([PRODUCTS_WRITE]))),
        )
        .layer(ApiKeyLayer::new(keys.store.clone()));
    assert_eq!(
        call_as(&app, Method::POST, "/v1/products", None).await.0,
        401
    );
    // The trap: a key with no products scope at all creates a product.
    assert_eq!(
        call_as(&app, Method::POST, "/v1/products", Some(&keys.other)).await,
        (200, "created".into())
    );
    // One layer per handler: each method keeps its own requirement.
    assert_eq!(
        call_as(&app, Method::POST, "/v2/products", Some(&keys.reader))
            .await
            .0,
        403
    );
    assert_eq!(
        call_as(&app, Method::GET, "/v2/products", Some(&keys.reader))
            .await
            .0,
        200
    );
    common::assert_logs_clean(&[&keys.reader, &keys.other]);
}

/// Claim: `HEAD` is answered by the `GET` handler, with the `GET` handler's scope requirement.
#[tokio::test]
async fn head_requests_carry_the_get_requirement() {
    let keys = keys().await;
    let app = Router::new()
        .route(
            "/v1/products",
            get((|| async { "list" }).layer(RequireScopes::all([PRODUCTS_READ]))),
        )
        .layer(ApiKeyLayer::new(keys.store.clone()));
    assert_eq!(
        call_as(&app, Method::HEAD, "/v1/products", None).await.0,
        401
    );
    assert_eq!(
        call_as(&app, Method::HEAD, "/v1/products", Some(&keys.other))
            .await
            .0,
        403
    );
    assert_eq!(
        call_as(&app, Method::HEAD, "/v1/products", Some(&keys.reader))
            .await
            .0,
        200
    );
}

/// Claim: a store keeps the digest, never the key; what it lists and prints holds no part of
/// the random body; and a stolen digest, presented as a key, does not authenticate.
#[tokio::test]
async fn a_stolen_store_holds_digests_that_do_not_authenticate() {
    let keys = keys().await;
    let listed = keys.store.list(None).await.unwrap();
    let dump = format!("{listed:?} {:?}", keys.store);
    for key in [&keys.reader, &keys.other] {
        assert!(!dump.contains(&key[8..40]), "part of a key is in {dump}");
        let digest = KeyDigest::of(key.as_bytes());
        let found = tower_api_key::KeyResolver::resolve(&keys.store, &digest)
            .await
            .unwrap();
        assert!(found.is_some(), "the store finds keys by digest");
    }

    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(ApiKeyLayer::new(keys.store.clone()));
    let digest = KeyDigest::of(keys.reader.as_bytes());
    // The digest as hex, and as the random body of an otherwise well-shaped key.
    for presented in [
        digest.to_hex(),
        format!("om_live_{}", &digest.to_hex()[..38]),
    ] {
        assert_eq!(call(&app, "/", Some(&presented)).await.0, 401);
    }
    common::assert_logs_clean(&[&keys.reader, &keys.other]);
}

/// Claim: a record whose environment disagrees with the key text (a forged row, a store bug) is
/// refused with the same `401` as an unknown key.
#[tokio::test]
async fn a_record_that_disagrees_with_the_key_environment_is_refused() {
    common::init_tracing();
    let sandbox = format().generate(Environment::Test).unwrap();
    let expected = sandbox.digest();
    // Answers "a live key" for the sandbox key's digest.
    let forged = move |digest: KeyDigest| async move {
        let record = (digest == expected)
            .then(|| KeyRecord::new("key_forged", Environment::Live, ScopeSet::empty()));
        Ok::<_, ResolveError>(record)
    };
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(ApiKeyLayer::resolver_builder(format(), forged).build());
    let request = Request::get("/")
        .header(AUTHORIZATION, format!("Bearer {}", sandbox.expose_secret()))
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()[WWW_AUTHENTICATE],
        r#"Bearer realm="api", error="invalid_token""#
    );
    common::assert_logs_clean(&[sandbox.expose_secret()]);
}

/// Claim: the `Rejection` attached to a refusal, its `Display` and `Debug`, and the challenge
/// never hold the presented credentials, whatever they are.
#[tokio::test]
async fn rejections_and_challenges_never_hold_what_the_client_sent() {
    let keys = keys().await;
    let revoked = keys
        .store
        .create(NewKey::new("Revoked", Environment::Live))
        .await
        .unwrap();
    keys.store.revoke(revoked.id()).await.unwrap();
    let revoked = revoked.key.expose_secret().to_owned();
    let app = Router::new()
        .route(
            "/",
            get(|| async { "ok" }).route_layer(RequireScopes::all([PRODUCTS_WRITE])),
        )
        .layer(ApiKeyLayer::new(keys.store.clone()));
    let mut bad_checksum = keys.reader.clone();
    let changed = if &bad_checksum[20..21] == "Q" {
        "R"
    } else {
        "Q"
    };
    bad_checksum.replace_range(20..21, changed);
    let hostile = [
        format!("Bearer {}", keys.reader),
        format!("Bearer {revoked}"),
        format!("Bearer {bad_checksum}"),
        format!("Bearer {}", &keys.reader[..40]),
        format!(
            r#"Bearer {}", error="insufficient_scope", scope="admin"#,
            keys.other
        ),
        format!("Basic {}", keys.other),
        format!("Bearer {} {}", keys.other, keys.reader),
    ];
    for value in &hostile {
        let request = Request::get("/")
            .header(AUTHORIZATION, value)
            .body(Body::empty())
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        assert!(response.status().is_client_error(), "{}", response.status());
        let rejection = response.extensions().get::<Rejection>().unwrap().clone();
        let headers = format!("{:?}", response.headers());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let shown = format!("{rejection} {rejection:?} {headers} {body:?}");
        for secret in [&keys.reader, &keys.other, &revoked, &bad_checksum] {
            assert!(!shown.contains(&secret[8..40]), "{shown}");
        }
        assert!(!shown.contains("admin"), "{shown}");
    }
    common::assert_logs_clean(&[&keys.reader, &keys.other, &revoked]);
}

/// Claim: a key's display hint shows the prefix, the environment and the last four characters,
/// which belong to the checksum: nothing of the 32 random characters.
#[test]
fn hints_show_no_random_character() {
    let format = format();
    for environment in Environment::ALL {
        let key = format.generate(environment).unwrap();
        let text = key.expose_secret();
        let head = format!("om_{environment}_");
        let checksum_start = format.key_len() - 6;
        assert_eq!(
            key.hint(),
            format!("{head}…{}", &text[format.key_len() - 4..])
        );
        assert!(format.key_len() - 4 >= checksum_start);
        assert_eq!(format!("{key}"), key.hint());
        assert_eq!(
            format!("{key:?}"),
            format!("PlaintextKey({:?})", key.hint())
        );
    }
}

/// Claim: the resolver is the only place a key is looked up, and it receives the digest, never
/// the key: a resolver that records what it is given sees SHA-256 of the presented key.
#[tokio::test]
async fn resolvers_see_only_the_digest() {
    common::init_tracing();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let resolver = move |digest: KeyDigest| {
        record.lock().unwrap().push(digest);
        async { Ok::<_, ResolveError>(None) }
    };
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(ApiKeyLayer::resolver_builder(format(), resolver).build());
    let key = format().generate(Environment::Live).unwrap();
    assert_eq!(call(&app, "/", Some(key.expose_secret())).await.0, 401);
    assert_eq!(*seen.lock().unwrap(), vec![key.digest()]);
}

/// Claim: rotation keeps the old key working for the grace period, then refuses it; the new key
/// works at once.
#[tokio::test]
async fn a_rotated_key_works_for_its_grace_period_then_dies() {
    common::init_tracing();
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let store = MemoryStore::new(format()).with_clock(clock.clone());
    let old = store
        .create(NewKey::new("Production", Environment::Live))
        .await
        .unwrap();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ApiKeyLayer::builder(store.clone())
            .clock(clock.clone())
            .build(),
    );
    let old_key = old.key.expose_secret();
    assert_eq!(call(&app, "/", Some(old_key)).await.0, 200);

    let rotation = store
        .rotate(old.id(), Duration::from_secs(60))
        .await
        .unwrap();
    let new_key = rotation.new.key.expose_secret();
    assert_eq!(call(&app, "/", Some(new_key)).await.0, 200);
    clock.advance(Duration::from_secs(59));
    assert_eq!(call(&app, "/", Some(old_key)).await.0, 200);
    clock.advance(Duration::from_secs(1));
    assert_eq!(call(&app, "/", Some(old_key)).await.0, 401);
    assert_eq!(call(&app, "/", Some(new_key)).await.0, 200);
    common::assert_logs_clean(&[old_key, new_key]);
}

/// Claim: a revocation through a store reaches every layer built on that store, each on its
/// very next request.
#[tokio::test]
async fn revocation_reaches_every_layer_built_on_the_store() {
    let keys = keys().await;
    let apps: Vec<Router> = ["public", "admin"]
        .into_iter()
        .map(|realm| {
            Router::new().route("/", get(|| async { "ok" })).layer(
                ApiKeyLayer::builder(keys.store.clone())
                    .realm(realm)
                    .build(),
            )
        })
        .collect();
    for app in &apps {
        assert_eq!(call(app, "/", Some(&keys.reader)).await.0, 200);
        assert_eq!(call(app, "/", Some(&keys.reader)).await.0, 200);
    }
    let listed = keys.store.list(None).await.unwrap();
    let reader = listed.iter().find(|k| k.record.name == "Reader").unwrap();
    keys.store.revoke(&reader.record.id).await.unwrap();
    for app in &apps {
        assert_eq!(call(app, "/", Some(&keys.reader)).await.0, 401);
        assert_eq!(call(app, "/", Some(&keys.other)).await.0, 200);
    }
    common::assert_logs_clean(&[&keys.reader, &keys.other]);
}

/// Claim: a request gets the principal of its own key, however requests for other keys
/// interleave with it and whatever else it sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_the_principal_of_its_own_key() {
    let keys = keys().await;
    let app = Router::new()
        .route(
            "/",
            get(|principal: tower_api_key::Principal| async move { principal.name().to_owned() }),
        )
        .layer(ApiKeyLayer::new(keys.store.clone()));
    let mut tasks = Vec::new();
    for i in 0..200 {
        let app = app.clone();
        let (key, name) = if i % 2 == 0 {
            (keys.reader.clone(), "Reader")
        } else {
            (keys.other.clone(), "Orders")
        };
        tasks.push(tokio::spawn(async move {
            let request = Request::get("/")
                .header(AUTHORIZATION, format!("Bearer {key}"))
                .header("x-api-key-name", "Reader")
                .body(Body::empty())
                .unwrap();
            let response = app.oneshot(request).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body, name);
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    common::assert_logs_clean(&[&keys.reader, &keys.other]);
}

/// Claim: a change made outside the crate's stores, which announces nothing, is seen once the
/// cached answer is older than `cache_ttl`.
#[tokio::test]
async fn a_change_made_outside_the_store_is_seen_within_the_cache_ttl() {
    common::init_tracing();
    let key = format().generate(Environment::Live).unwrap();
    let digest = key.digest();
    // A database row that another process may revoke behind the layer's back.
    let row = Arc::new(Mutex::new(KeyRecord::new(
        "key_1",
        Environment::Live,
        ScopeSet::empty(),
    )));
    let database = row.clone();
    let resolver = move |presented: KeyDigest| {
        let found = (presented == digest).then(|| database.lock().unwrap().clone());
        async move { Ok::<_, ResolveError>(found) }
    };
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ApiKeyLayer::resolver_builder(format(), resolver)
            .cache_ttl(Duration::from_millis(200))
            .build(),
    );
    assert_eq!(call(&app, "/", Some(key.expose_secret())).await.0, 200);
    row.lock().unwrap().revoked_at = Some(SystemTime::now());
    // Until the TTL runs out the cached answer stands...
    assert_eq!(call(&app, "/", Some(key.expose_secret())).await.0, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // ...and then the change is seen.
    assert_eq!(call(&app, "/", Some(key.expose_secret())).await.0, 401);
    common::assert_logs_clean(&[key.expose_secret()]);
}

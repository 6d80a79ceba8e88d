//! A fake Kubernetes API server for Events, over real HTTP on loopback, for the real `kube`
//! client. It follows the documented API behaviour ("API concepts: efficient detection of
//! changes"), not kollate's code:
//!
//! - every change gets the next cluster-wide `resourceVersion`;
//! - `list` returns the current objects with the list's `resourceVersion`, paged by `limit`
//!   with an opaque `continue` token (in uid order, so a page costs what it holds); every
//!   page of a list is a consistent snapshot at the first page's `resourceVersion`, and a
//!   `continue` token older than the compaction point gets a 410 `Expired`;
//! - `watch` streams `{"type", "object"}` frames for every change after the given
//!   `resourceVersion` (`0` or none: synthetic `ADDED` frames for every current object
//!   first, then changes from now), `BOOKMARK` frames when
//!   `allowWatchBookmarks=true`, ends after `timeoutSeconds`;
//! - a watch from a `resourceVersion` older than the compaction point gets an `ERROR` frame
//!   with a `Status` of code 410, reason `Expired`;
//! - faults on demand: connections dropped after N frames, compaction, 500s.
//!
//! Both `/api/v1/.../events` (core/v1) and `/apis/events.k8s.io/v1/.../events` are served
//! from one store; objects keep whatever shape the test created them in.
//!
//! Other objects (Pods, ReplicaSets, Deployments...) can be read by name, in full or as
//! `PartialObjectMetadata` when the client asks for it in `Accept` (what metadata-only
//! clients do); a missing one is a 404 `NotFound` Status.
//!
//! `coordination.k8s.io/v1` Leases: get (404 `NotFound` when missing), create (409
//! `AlreadyExists`), update with optimistic concurrency (409 `Conflict` when
//! `metadata.resourceVersion` is not the current one).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// How often bookmarks are sent on an idle watch.
const BOOKMARK_EVERY: Duration = Duration::from_millis(300);

#[derive(Default)]
struct Store {
    rv: u64,
    /// Current objects by uid: (resourceVersion, object).
    objects: BTreeMap<String, (u64, Value)>,
    /// Every change: (resourceVersion, watch type, object).
    history: Vec<(u64, &'static str, Value)>,
    /// Watches from below this resourceVersion are expired (410).
    compacted: u64,
    /// Close every watch after a random number of frames up to this (a dropped connection).
    drop_after: Option<usize>,
    /// Answer the next N requests with a 500.
    fail_next: usize,
    /// Send no bookmarks (a watch that says nothing: what a stall looks like).
    silent: bool,
    /// Answer the next N watch requests with 429 and this Retry-After (seconds).
    throttle: (usize, u64),
    /// Other objects by "group/version/resource/namespace/name", and GETs of each.
    things: BTreeMap<String, Value>,
    gets: BTreeMap<String, usize>,
    /// Leases by (namespace, name).
    leases: BTreeMap<(String, String), Value>,
    /// Requests served, by kind.
    lists: usize,
    watches: usize,
}

/// A running fake API server.
pub struct FakeApiServer {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    handle: Handle,
    /// Serves the listener and every connection; dropped to go down (connections close).
    runtime: Option<tokio::runtime::Runtime>,
    app: Router,
}

/// What tests change the cluster through; cloneable, usable from any thread.
#[derive(Clone)]
pub struct Handle {
    store: Arc<Mutex<Store>>,
}

impl std::ops::Deref for FakeApiServer {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.handle
    }
}

type Shared = Arc<Mutex<Store>>;

impl FakeApiServer {
    /// Starts serving on a free loopback port.
    pub fn start() -> FakeApiServer {
        // A real cluster's resourceVersion (the etcd revision) is never 0: "0" means "any".
        let store: Shared = Arc::new(Mutex::new(Store {
            rv: 1000,
            ..Store::default()
        }));
        let app = Router::new()
            .route("/api/v1/events", get(events))
            .route("/api/v1/namespaces/{ns}/events", get(namespaced_events))
            .route("/apis/events.k8s.io/v1/events", get(events))
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                get(namespaced_events),
            )
            .route(
                "/api/v1/namespaces/{ns}/{resource}/{name}",
                get(get_core_object),
            )
            .route(
                "/apis/{group}/{version}/namespaces/{ns}/{resource}/{name}",
                get(get_object),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                post(create_lease),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(get_lease).put(update_lease),
            )
            .with_state(store.clone());
        let mut server = FakeApiServer {
            port: 0,
            handle: Handle { store },
            runtime: None,
            app,
        };
        server.serve();
        server
    }

    /// A kubeconfig reaching this server with a bearer token.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\nusers:\n- name: tester\n  user:\n    token: test-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\ncurrent-context: fake\n",
            self.port
        )
    }

    /// Listens on `port` (any free port the first time), on a runtime of its own.
    fn serve(&mut self) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", self.port)))
            .unwrap();
        self.port = listener.local_addr().unwrap().port();
        let app = self.app.clone();
        runtime.spawn(async move { axum::serve(listener, app).await });
        self.runtime = Some(runtime);
    }

    /// The server becomes unreachable: it stops listening and every connection closes.
    pub fn go_down(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// The server listens again on the same port.
    pub fn come_back(&mut self) {
        self.serve();
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops serving.
    pub fn stop(mut self) {
        self.go_down();
    }
}

impl Handle {
    /// Records a change: `ADDED` for a new uid, `MODIFIED` for a known one. Returns the
    /// object's new resourceVersion.
    pub fn apply(&self, mut object: Value) -> u64 {
        let mut store = self.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let uid = object["metadata"]["uid"].as_str().unwrap().to_owned();
        let kind = if store.objects.contains_key(&uid) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.objects.insert(uid, (rv, object.clone()));
        store.history.push((rv, kind, object));
        rv
    }

    /// Adds `n` objects made by `make(i)` that existed before anyone could watch: they are
    /// listed, but their changes are compacted away (as in a cluster that has run a while).
    pub fn preload(&self, n: usize, make: impl Fn(usize) -> Value) {
        let mut store = self.store.lock().unwrap();
        for i in 0..n {
            store.rv += 1;
            let rv = store.rv;
            let mut object = make(i);
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            let uid = object["metadata"]["uid"].as_str().unwrap().to_owned();
            store.objects.insert(uid, (rv, object));
        }
        store.compacted = store.rv + 1;
    }

    /// Deletes an object (what TTL expiry looks like).
    pub fn delete(&self, uid: &str) {
        let mut store = self.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        if let Some((_, mut object)) = store.objects.remove(uid) {
            object["metadata"]["resourceVersion"] = json!(rv.to_string());
            store.history.push((rv, "DELETED", object));
        }
    }

    /// Expires every resourceVersion up to now: later watches from them get 410.
    pub fn compact(&self) {
        let mut store = self.store.lock().unwrap();
        store.compacted = store.rv + 1;
    }

    /// Drops every watch connection after a random number of frames, 1 to `frames`.
    pub fn drop_watches_after(&self, frames: Option<usize>) {
        self.store.lock().unwrap().drop_after = frames;
    }

    /// Stops (or resumes) sending bookmarks on open watches.
    pub fn silence_bookmarks(&self, silent: bool) {
        self.store.lock().unwrap().silent = silent;
    }

    /// Answers the next `n` watch requests with 429 Too Many Requests, `Retry-After: secs`.
    pub fn throttle_watches(&self, n: usize, secs: u64) {
        self.store.lock().unwrap().throttle = (n, secs);
    }

    /// Answers the next `n` requests with 500 Internal Server Error.
    pub fn fail_next(&self, n: usize) {
        self.store.lock().unwrap().fail_next = n;
    }

    /// Throttled (429) answers still to give.
    pub fn throttles_left(&self) -> usize {
        self.store.lock().unwrap().throttle.0
    }

    /// Stores an object of another resource (`group` empty for the core group).
    pub fn put_object(&self, group: &str, version: &str, resource: &str, object: Value) {
        let key = thing_key(
            group,
            version,
            resource,
            object["metadata"]["namespace"].as_str().unwrap(),
            object["metadata"]["name"].as_str().unwrap(),
        );
        self.store.lock().unwrap().things.insert(key, object);
    }

    /// How often an object of another resource was read (found or not).
    pub fn gets(&self, resource: &str, namespace: &str, name: &str) -> usize {
        let suffix = format!("/{resource}/{namespace}/{name}");
        let store = self.store.lock().unwrap();
        store
            .gets
            .iter()
            .filter(|(k, _)| k.ends_with(&suffix))
            .map(|(_, n)| n)
            .sum()
    }

    /// A Lease as stored.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        let store = self.store.lock().unwrap();
        store
            .leases
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// (lists, watches) served so far.
    pub fn requests(&self) -> (usize, usize) {
        let store = self.store.lock().unwrap();
        (store.lists, store.watches)
    }
}

async fn events(
    State(store): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    serve(store, None, q).await
}

async fn namespaced_events(
    State(store): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    serve(store, Some(ns), q).await
}

fn in_namespace(object: &Value, ns: &Option<String>) -> bool {
    ns.as_ref()
        .is_none_or(|ns| object["metadata"]["namespace"].as_str() == Some(ns))
}

fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    // Only `type=X` (what kollate sends for `types`) is understood; anything else matches.
    selector.is_none_or(|s| {
        s.split(',').all(|term| match term.split_once('=') {
            Some(("type", want)) => object["type"].as_str() == Some(want),
            _ => true,
        })
    })
}

async fn serve(store: Shared, ns: Option<String>, q: BTreeMap<String, String>) -> Response {
    {
        let mut s = store.lock().unwrap();
        if s.fail_next > 0 {
            s.fail_next -= 1;
            return status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "injected failure".into(),
            );
        }
    }
    if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
        {
            let mut s = store.lock().unwrap();
            if s.throttle.0 > 0 {
                s.throttle.0 -= 1;
                let status = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "too many requests", "reason": "TooManyRequests", "code": 429});
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", s.throttle.1.to_string())],
                    axum::Json(status),
                )
                    .into_response();
            }
        }
        watch(store, ns, q)
    } else {
        list(store, ns, q)
    }
}

fn list(store: Shared, ns: Option<String>, q: BTreeMap<String, String>) -> Response {
    let mut s = store.lock().unwrap();
    s.lists += 1;
    // The continue token is opaque to clients; here it is "{snapshot rv}:{last uid served}".
    let continued = q.get("continue").and_then(|c| {
        let (at, after) = c.split_once(':')?;
        Some((at.parse::<u64>().ok()?, after.to_owned()))
    });
    if let Some((at, _)) = &continued
        && at + 1 < s.compacted
    {
        return status(
            StatusCode::GONE,
            "Expired",
            "The provided continue parameter is too old to display a consistent list result. \
             You can start a new list without the continue parameter."
                .to_owned(),
        );
    }
    let limit: usize = q
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    // Every page of one list shows the cluster as it was at the first page.
    let (at, after) = continued.map_or((s.rv, None), |(at, after)| (at, Some(after)));
    let start = match after {
        Some(uid) => std::ops::Bound::Excluded(uid),
        None => std::ops::Bound::Unbounded,
    };
    let wanted = |o: &Value| in_namespace(o, &ns) && matches_selector(o, q.get("fieldSelector"));
    let then = changed_since(&s, at);
    // The first limit + 1 objects of the snapshot are among the first limit + 1 unchanged
    // ones and the first limit + 1 changed ones.
    let unchanged = s
        .objects
        .range((start.clone(), std::ops::Bound::Unbounded))
        .filter(|(uid, (rv, o))| *rv <= at && !then.contains_key(uid.as_str()) && wanted(o))
        .map(|(uid, (_, o))| (uid.as_str(), o))
        .take(limit.saturating_add(1));
    let changed = then
        .range::<str, _>((
            start.as_ref().map(String::as_str),
            std::ops::Bound::Unbounded,
        ))
        .filter_map(|(uid, o)| o.filter(|o| wanted(o)).map(|o| (*uid, o)))
        .take(limit.saturating_add(1));
    let mut selected: BTreeMap<&str, &Value> = unchanged.chain(changed).collect();
    let more = selected.len() > limit;
    let page: Vec<(&str, &Value)> = std::iter::from_fn(|| selected.pop_first())
        .take(limit)
        .collect();
    let mut metadata = json!({"resourceVersion": at.to_string()});
    if more && let Some((last, _)) = page.last() {
        metadata["continue"] = json!(format!("{at}:{last}"));
    }
    let items: Vec<&Value> = page.into_iter().map(|(_, o)| o).collect();
    axum::Json(
        json!({"kind": "EventList", "apiVersion": "v1", "metadata": metadata, "items": items}),
    )
    .into_response()
}

/// The objects changed after resourceVersion `at`, by uid, as they were at `at` (`None`:
/// not there yet, or deleted by then). Preloaded objects have no history: one changed
/// later counts as not there at `at`.
fn changed_since(s: &Store, at: u64) -> BTreeMap<&str, Option<&Value>> {
    fn uid(o: &Value) -> &str {
        o["metadata"]["uid"].as_str().unwrap_or_default()
    }
    let after = s.history.partition_point(|(rv, _, _)| *rv <= at);
    let mut then: BTreeMap<&str, Option<&Value>> = BTreeMap::new();
    for (_, _, o) in &s.history[after..] {
        then.insert(uid(o), None);
    }
    let mut unresolved: std::collections::HashSet<&str> = then.keys().copied().collect();
    for (_, kind, o) in s.history[..after].iter().rev() {
        if unresolved.is_empty() {
            break;
        }
        if unresolved.remove(uid(o)) && *kind != "DELETED" {
            then.insert(uid(o), Some(o));
        }
    }
    then
}

struct WatchState {
    /// Synthetic `ADDED` frames still to send (a watch without a resourceVersion).
    initial: std::collections::VecDeque<Value>,
    store: Shared,
    ns: Option<String>,
    selector: Option<String>,
    from: u64,
    sent: usize,
    /// This connection breaks after this many frames (drawn when the fault is on).
    breaks_after: Option<usize>,
    deadline: Instant,
    bookmarks: bool,
    last_bookmark: Instant,
    done: bool,
}

fn watch(store: Shared, ns: Option<String>, q: BTreeMap<String, String>) -> Response {
    let (from, expired, initial) = {
        let mut s = store.lock().unwrap();
        s.watches += 1;
        let (from, initial) = match q.get("resourceVersion").map(String::as_str) {
            None | Some("") | Some("0") => (
                s.rv,
                s.objects
                    .values()
                    .map(|(_, o)| o)
                    .filter(|o| in_namespace(o, &ns) && matches_selector(o, q.get("fieldSelector")))
                    .cloned()
                    .collect(),
            ),
            Some(v) => (v.parse().unwrap_or(0), Default::default()),
        };
        (from, from + 1 < s.compacted, initial)
    };
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let state = WatchState {
        initial,
        store,
        ns,
        selector: q.get("fieldSelector").cloned(),
        from,
        sent: 0,
        breaks_after: None,
        deadline: Instant::now() + Duration::from_secs(timeout),
        bookmarks: matches!(
            q.get("allowWatchBookmarks").map(String::as_str),
            Some("true" | "1")
        ),
        last_bookmark: Instant::now(),
        done: false,
    };
    if expired {
        let status = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410}});
        return Body::from(format!("{status}\n")).into_response();
    }
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done || Instant::now() >= st.deadline {
                return None;
            }
            if let Some(object) = st.initial.pop_front() {
                let frame = json!({"type": "ADDED", "object": object});
                return Some((Ok::<_, Infallible>(Bytes::from(format!("{frame}\n"))), st));
            }
            let next = {
                let s = st.store.lock().unwrap();
                let drop_after = if s.silent { None } else { s.drop_after };
                let silent = s.silent;
                // History is in resourceVersion order: start right after `from`.
                let start = s.history.partition_point(|(rv, _, _)| *rv <= st.from);
                let change = s.history[start..]
                    .iter()
                    .find(|(rv, _, o)| {
                        *rv > st.from
                            && in_namespace(o, &st.ns)
                            && matches_selector(o, st.selector.as_ref())
                    })
                    .cloned();
                (change, drop_after, s.rv, silent)
            };
            match next {
                (Some((rv, kind, object)), drop_after, _, _) => {
                    st.from = rv;
                    st.sent += 1;
                    let breaks_after = *st.breaks_after.get_or_insert_with(|| {
                        drop_after.map_or(usize::MAX, |n| rand::random_range(1..=n.max(1)))
                    });
                    if st.sent >= breaks_after {
                        st.done = true;
                    }
                    let frame = json!({"type": kind, "object": object});
                    return Some((Ok::<_, Infallible>(Bytes::from(format!("{frame}\n"))), st));
                }
                (None, _, current, false)
                    if st.bookmarks && st.last_bookmark.elapsed() >= BOOKMARK_EVERY =>
                {
                    st.last_bookmark = Instant::now();
                    st.from = st.from.max(current);
                    let frame = json!({"type": "BOOKMARK", "object": {"kind": "Event", "apiVersion": "v1",
                        "metadata": {"resourceVersion": st.from.to_string(), "annotations": {"k8s.io/initial-events-end": "true"}}}});
                    return Some((Ok(Bytes::from(format!("{frame}\n"))), st));
                }
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    Body::from_stream(stream).into_response()
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (code, axum::Json(body)).into_response()
}

fn thing_key(group: &str, version: &str, resource: &str, ns: &str, name: &str) -> String {
    format!("{group}/{version}/{resource}/{ns}/{name}")
}

async fn get_core_object(
    State(store): State<Shared>,
    Path((ns, resource, name)): Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    serve_object(store, thing_key("", "v1", &resource, &ns, &name), &headers)
}

async fn get_object(
    State(store): State<Shared>,
    Path((group, version, ns, resource, name)): Path<(String, String, String, String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    serve_object(
        store,
        thing_key(&group, &version, &resource, &ns, &name),
        &headers,
    )
}

fn serve_object(store: Shared, key: String, headers: &axum::http::HeaderMap) -> Response {
    let mut s = store.lock().unwrap();
    *s.gets.entry(key.clone()).or_default() += 1;
    let Some(object) = s.things.get(&key) else {
        let name = key.rsplit('/').next().unwrap_or_default();
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("\"{name}\" not found"),
        );
    };
    let metadata_only = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    if metadata_only {
        axum::Json(
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": object["metadata"]}),
        )
        .into_response()
    } else {
        axum::Json(object.clone()).into_response()
    }
}

async fn get_lease(
    State(store): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let s = store.lock().unwrap();
    match s.leases.get(&(ns, name.clone())) {
        Some(lease) => axum::Json(lease.clone()).into_response(),
        None => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
        ),
    }
}

async fn create_lease(
    State(store): State<Shared>,
    Path(ns): Path<String>,
    axum::Json(mut lease): axum::Json<Value>,
) -> Response {
    let mut s = store.lock().unwrap();
    let name = lease["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = (ns.clone(), name.clone());
    if s.leases.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("leases.coordination.k8s.io \"{name}\" already exists"),
        );
    }
    s.rv += 1;
    lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    lease["metadata"]["namespace"] = json!(ns);
    lease["metadata"]["uid"] = json!(format!("lease-{}", s.rv));
    lease["apiVersion"] = json!("coordination.k8s.io/v1");
    lease["kind"] = json!("Lease");
    s.leases.insert(key, lease.clone());
    (StatusCode::CREATED, axum::Json(lease)).into_response()
}

async fn update_lease(
    State(store): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    axum::Json(mut lease): axum::Json<Value>,
) -> Response {
    let mut s = store.lock().unwrap();
    let key = (ns.clone(), name.clone());
    let Some(current) = s.leases.get(&key) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("leases.coordination.k8s.io \"{name}\" not found"),
        );
    };
    let current_rv = current["metadata"]["resourceVersion"].clone();
    let sent_rv = &lease["metadata"]["resourceVersion"];
    if !sent_rv.is_null() && *sent_rv != current_rv {
        return status(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on leases.coordination.k8s.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        );
    }
    s.rv += 1;
    lease["metadata"]["resourceVersion"] = json!(s.rv.to_string());
    lease["metadata"]["namespace"] = json!(ns);
    s.leases.insert(key, lease.clone());
    axum::Json(lease).into_response()
}

/// Now, as the API server writes it.
fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A core/v1 Event object that happened now.
pub fn core_event(uid: &str, namespace: &str, reason: &str, count: u64) -> Value {
    let now = now();
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("pod-{uid}.{uid}"), "namespace": namespace, "uid": uid},
        "involvedObject": {"kind": "Pod", "namespace": namespace, "name": format!("pod-{uid}")},
        "reason": reason, "message": format!("{reason} for pod-{uid}"), "type": "Warning",
        "source": {"component": "kubelet", "host": "n-1"}, "count": count,
        "firstTimestamp": now, "lastTimestamp": now,
    })
}

/// An events.k8s.io/v1 Event object that happened now.
pub fn events_v1_event(uid: &str, namespace: &str, reason: &str) -> Value {
    let now = chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string();
    json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": format!("pod-{uid}.{uid}"), "namespace": namespace, "uid": uid},
        "regarding": {"kind": "Pod", "namespace": namespace, "name": format!("pod-{uid}")},
        "reason": reason, "note": format!("{reason} for pod-{uid}"), "type": "Normal",
        "reportingController": "kubelet", "reportingInstance": "n-1", "action": "Started",
        "eventTime": now,
    })
}

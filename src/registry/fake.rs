//! An in-process Schema Registry that follows Confluent's REST API, for tests and the demo.
//!
//! No real Schema Registry can be installed on the machines this project is built on, so this stands
//! in for one. It follows the documented API closely where partner-sync and schema_registry_converter
//! use it — same paths, bodies, status codes and `error_code`s, content type
//! `application/vnd.schemaregistry.v1+json` — and says plainly where it is simpler:
//!
//! | Call | Behaviour |
//! |---|---|
//! | `POST /subjects/{s}/versions` | register; same schema → same id (also across subjects); incompatible → 409 (`409`); unparsable → 422 (`42201`) |
//! | `POST /subjects/{s}` | look up a schema under a subject → `{subject, id, version, schema}`; 404 `40401` (subject) / `40403` (schema) |
//! | `GET /schemas/ids/{id}` (`/schema` for the raw text) | by id; 404 `40403` |
//! | `GET /subjects`, `GET /subjects/{s}/versions`, `GET /subjects/{s}/versions/{n or latest}` | listing and lookup; 404 `40401` / `40402` |
//! | `POST /compatibility/subjects/{s}/versions/{v or latest}` | `{is_compatible}` against that version |
//! | `GET`/`PUT /config`, `/config/{s}` | compatibility level; `BACKWARD` by default |
//!
//! Authentication: [`FakeRegistry::require_authorization`] makes every call without exactly that
//! `Authorization` header value (`Basic <base64 user:password>` or `Bearer <token>`) answer 401
//! (`40101`), as Confluent's registry does with HTTP basic or bearer authentication configured.
//!
//! Simplifications: Avro only (`schemaType` other than `AVRO` → 422), no references, no soft
//! deletes, no modes/contexts, one credential. Compatibility checks use apache-avro's `SchemaCompatibility`
//! (`BACKWARD`, `FORWARD`, `FULL`, their `_TRANSITIVE` forms, `NONE`). Schema identity compares the
//! full parsed form (defaults and logical types included). For fault injection, [`FakeRegistry::set_unavailable`]
//! makes every call answer 503 (`50301`), as a registry behind a failing load balancer would.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::http::{self, Request, Response};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

#[derive(Default)]
struct Store {
    /// id → (canonical form, original text)
    schemas: Vec<(String, String)>,
    /// subject → ids of its versions, in order (version = index + 1)
    subjects: BTreeMap<String, Vec<u32>>,
    global_level: Option<String>,
    subject_level: BTreeMap<String, String>,
}

/// The registry's shared state and switches.
pub struct FakeRegistry {
    store: Mutex<Store>,
    unavailable: AtomicBool,
    requests: AtomicU64,
    /// The `Authorization` header value every call must carry, if any.
    authorization: Mutex<Option<String>>,
}

/// A running registry on loopback; stops when dropped.
pub struct RunningRegistry {
    pub registry: Arc<FakeRegistry>,
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl RunningRegistry {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl FakeRegistry {
    pub fn new() -> Arc<FakeRegistry> {
        Arc::new(FakeRegistry {
            store: Mutex::new(Store::default()),
            unavailable: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            authorization: Mutex::new(None),
        })
    }

    /// Serves on `127.0.0.1:port` (0 = any free port) until the returned handle is dropped.
    pub async fn start(port: u16) -> std::io::Result<RunningRegistry> {
        let registry = FakeRegistry::new();
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handler = registry.clone();
        tokio::spawn(http::serve(
            listener,
            Arc::new(move |r| handler.handle(r)),
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(RunningRegistry {
            registry,
            addr,
            _stop: stop,
        })
    }

    /// While true, every call answers 503.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.unavailable.store(unavailable, Ordering::SeqCst);
    }

    /// From now on, every call must carry exactly this `Authorization` header value (`None`: no
    /// authentication).
    pub fn require_authorization(&self, value: Option<&str>) {
        *self.authorization.lock().expect("registry lock") = value.map(str::to_string);
    }

    /// The subjects registered so far, in name order.
    pub fn subjects(&self) -> Vec<String> {
        let store = self.store.lock().expect("registry lock");
        store.subjects.keys().cloned().collect()
    }

    /// How many requests were answered (including 503s).
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Registers directly (what `POST /subjects/{s}/versions` does), for test set-up.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, String> {
        let mut store = self.store.lock().expect("registry lock");
        register(&mut store, subject, schema).map_err(|(_, _, message)| message)
    }

    pub fn handle(&self, r: Request) -> Response {
        self.requests.fetch_add(1, Ordering::SeqCst);
        if self.unavailable.load(Ordering::SeqCst) {
            return error(
                503,
                50301,
                "Schema Registry is unavailable (injected fault)",
            );
        }
        let required = self.authorization.lock().expect("registry lock").clone();
        if let Some(required) = required {
            let given = r
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.as_str());
            if given != Some(required.as_str()) {
                return error(401, 40101, "Unauthorized");
            }
        }
        let mut store = self.store.lock().expect("registry lock");
        let segments: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        let body = || serde_json::from_slice::<Value>(&r.body).unwrap_or(Value::Null);
        match (r.method.as_str(), segments.as_slice()) {
            ("GET", ["schemas", "ids", id]) => by_id(&store, id, false),
            ("GET", ["schemas", "ids", id, "schema"]) => by_id(&store, id, true),
            ("GET", ["subjects"]) => ok(json!(store.subjects.keys().collect::<Vec<_>>())),
            ("GET", ["subjects", subject, "versions"]) => match store.subjects.get(*subject) {
                Some(ids) => ok(json!((1..=ids.len()).collect::<Vec<_>>())),
                None => error(404, 40401, &format!("Subject '{subject}' not found.")),
            },
            ("GET", ["subjects", subject, "versions", version]) => {
                version_of(&store, subject, version)
            }
            ("POST", ["subjects", subject, "versions"]) => {
                let Some(schema) = schema_text(&body()) else {
                    return error(422, 42201, "Invalid schema: missing 'schema'");
                };
                if let Some(t) = body().get("schemaType").and_then(Value::as_str) {
                    if t != "AVRO" {
                        return error(
                            422,
                            42201,
                            &format!(
                                "Invalid schema: schemaType {t} is not supported by this registry"
                            ),
                        );
                    }
                }
                match register(&mut store, subject, &schema) {
                    Ok(id) => ok(json!({ "id": id })),
                    Err((status, code, message)) => error(status, code, &message),
                }
            }
            ("POST", ["subjects", subject]) => {
                let Some(schema) = schema_text(&body()) else {
                    return error(422, 42201, "Invalid schema");
                };
                lookup(&store, subject, &schema)
            }
            ("POST", ["compatibility", "subjects", subject, "versions", version]) => {
                let Some(schema) = schema_text(&body()) else {
                    return error(422, 42201, "Invalid schema");
                };
                let Ok(candidate) = Schema::parse_str(&schema) else {
                    return error(422, 42201, "Invalid schema");
                };
                let level = level_of(&store, subject);
                let ids = match store.subjects.get(*subject) {
                    Some(ids) => ids.clone(),
                    None => return error(404, 40401, &format!("Subject '{subject}' not found.")),
                };
                let against: Vec<u32> = match *version {
                    "latest" => ids.last().copied().into_iter().collect(),
                    n => match n
                        .parse::<usize>()
                        .ok()
                        .and_then(|n| ids.get(n.wrapping_sub(1)))
                    {
                        Some(id) => vec![*id],
                        None => return error(404, 40402, &format!("Version {n} not found.")),
                    },
                };
                let existing: Vec<Schema> = against
                    .iter()
                    .filter_map(|id| parsed(&store, *id))
                    .collect();
                ok(json!({ "is_compatible": compatible(&level, &candidate, &existing) }))
            }
            ("GET", ["config"]) => ok(
                json!({ "compatibilityLevel": store.global_level.clone().unwrap_or_else(|| "BACKWARD".into()) }),
            ),
            ("GET", ["config", subject]) => {
                ok(json!({ "compatibilityLevel": level_of(&store, subject) }))
            }
            ("PUT", ["config"]) | ("PUT", ["config", _]) => {
                let Some(level) = body()
                    .get("compatibility")
                    .and_then(Value::as_str)
                    .map(str::to_uppercase)
                else {
                    return error(422, 42203, "Invalid compatibility level");
                };
                if !LEVELS.contains(&level.as_str()) {
                    return error(422, 42203, &format!("Invalid compatibility level {level}"));
                }
                match segments.get(1) {
                    Some(subject) => store
                        .subject_level
                        .insert(subject.to_string(), level.clone()),
                    None => store.global_level.replace(level.clone()),
                };
                ok(json!({ "compatibility": level }))
            }
            _ => error(
                404,
                404,
                &format!("{} {} is not part of this registry's API", r.method, r.path),
            ),
        }
    }
}

const LEVELS: [&str; 7] = [
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
    "NONE",
];

fn ok(v: Value) -> Response {
    Response::new(200, CONTENT_TYPE, v.to_string())
}

fn error(status: u16, code: u32, message: &str) -> Response {
    Response::new(
        status,
        CONTENT_TYPE,
        json!({ "error_code": code, "message": message }).to_string(),
    )
}

fn schema_text(body: &Value) -> Option<String> {
    body.get("schema")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn parsed(store: &Store, id: u32) -> Option<Schema> {
    store
        .schemas
        .get(id.checked_sub(1)? as usize)
        .and_then(|(_, text)| Schema::parse_str(text).ok())
}

fn level_of(store: &Store, subject: &str) -> String {
    store
        .subject_level
        .get(subject)
        .cloned()
        .or_else(|| store.global_level.clone())
        .unwrap_or_else(|| "BACKWARD".into())
}

/// Is `candidate` compatible with `existing` (oldest first) under `level`?
fn compatible(level: &str, candidate: &Schema, existing: &[Schema]) -> bool {
    let transitive = level.ends_with("_TRANSITIVE");
    let against: Vec<&Schema> = if transitive {
        existing.iter().collect()
    } else {
        existing.last().into_iter().collect()
    };
    let backward = |old: &Schema| SchemaCompatibility::can_read(old, candidate).is_ok();
    let forward = |old: &Schema| SchemaCompatibility::can_read(candidate, old).is_ok();
    against
        .iter()
        .all(|old| match level.trim_end_matches("_TRANSITIVE") {
            "NONE" => true,
            "FORWARD" => forward(old),
            "FULL" => forward(old) && backward(old),
            _ => backward(old),
        })
}

fn register(store: &mut Store, subject: &str, text: &str) -> Result<u32, (u16, u32, String)> {
    let schema =
        Schema::parse_str(text).map_err(|e| (422, 42201, format!("Invalid schema: {e}")))?;
    let canonical = identity(&schema);
    let existing_id = store
        .schemas
        .iter()
        .position(|(c, _)| *c == canonical)
        .map(|i| i as u32 + 1);
    let versions = store.subjects.get(subject).cloned().unwrap_or_default();
    if let Some(id) = existing_id.filter(|id| versions.contains(id)) {
        return Ok(id);
    }
    let previous: Vec<Schema> = versions
        .iter()
        .filter_map(|id| parsed(store, *id))
        .collect();
    if !compatible(&level_of(store, subject), &schema, &previous) {
        return Err((
            409,
            409,
            format!("Schema being registered is incompatible with an earlier schema for subject \"{subject}\""),
        ));
    }
    let id = existing_id.unwrap_or_else(|| {
        store.schemas.push((canonical, text.to_string()));
        store.schemas.len() as u32
    });
    store
        .subjects
        .entry(subject.to_string())
        .or_default()
        .push(id);
    Ok(id)
}

/// What makes two schemas "the same" here: the full parsed form, defaults and logical types included
/// (the real registry compares the schema string, optionally normalized).
fn identity(schema: &Schema) -> String {
    serde_json::to_string(schema).unwrap_or_default()
}

fn by_id(store: &Store, id: &str, raw: bool) -> Response {
    let found = id
        .parse::<u32>()
        .ok()
        .and_then(|id| id.checked_sub(1))
        .and_then(|i| store.schemas.get(i as usize));
    match found {
        Some((_, text)) if raw => Response::new(200, CONTENT_TYPE, text.clone()),
        Some((_, text)) => ok(json!({ "schema": text })),
        None => error(404, 40403, &format!("Schema {id} not found")),
    }
}

fn version_of(store: &Store, subject: &str, version: &str) -> Response {
    let Some(ids) = store.subjects.get(subject) else {
        return error(404, 40401, &format!("Subject '{subject}' not found."));
    };
    let index = match version {
        "latest" | "-1" => ids.len().checked_sub(1),
        n => n
            .parse::<usize>()
            .ok()
            .and_then(|n| n.checked_sub(1))
            .filter(|i| *i < ids.len()),
    };
    match index {
        Some(i) => {
            let id = ids[i];
            ok(
                json!({ "subject": subject, "id": id, "version": i + 1, "schema": store.schemas[id as usize - 1].1 }),
            )
        }
        None => error(404, 40402, &format!("Version {version} not found.")),
    }
}

fn lookup(store: &Store, subject: &str, text: &str) -> Response {
    let Ok(schema) = Schema::parse_str(text) else {
        return error(422, 42201, "Invalid schema");
    };
    let canonical = identity(&schema);
    let Some(ids) = store.subjects.get(subject) else {
        return error(404, 40401, &format!("Subject '{subject}' not found."));
    };
    match ids
        .iter()
        .position(|id| store.schemas[*id as usize - 1].0 == canonical)
    {
        Some(i) => ok(
            json!({ "subject": subject, "id": ids[i], "version": i + 1, "schema": store.schemas[ids[i] as usize - 1].1 }),
        ),
        None => error(404, 40403, "Schema not found"),
    }
}

//! The wasm32 stores: [`IndexedDbStore`] (browsers' default) and [`JsStore`]
//! (a store object written in JavaScript: a file in Node.js, AsyncStorage
//! in React Native, a test double).

use std::cell::RefCell;
use std::rc::Rc;

use futures::channel::oneshot;
use js_sys::{Array, Function, Object, Reflect, Uint8Array};
use steadfast_core::PersistOp;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{EventTarget, IdbDatabase, IdbFactory, IdbObjectStore, IdbOpenDbRequest, IdbRequest};

use super::{decode, BoxFuture, Snapshot, Store, StoreError};

const SESSIONS: &str = "session";
const MESSAGES: &str = "messages";
const SESSION_KEY: &str = "s";

/// The message of a JS error (or the value itself if it is a string).
fn js_error(what: &str, error: &JsValue) -> StoreError {
    let detail = Reflect::get(error, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .or_else(|| error.as_string())
        .unwrap_or_default();
    StoreError([what, ": ", &detail].concat())
}

fn key(seq: u64) -> JsValue {
    // Seqs stay far below 2^53, where f64 is exact.
    #[allow(clippy::cast_precision_loss)]
    JsValue::from_f64(seq as f64)
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn seq_of(key: &JsValue) -> Option<u64> {
    key.as_f64()
        .filter(|k| k.fract() == 0.0 && *k >= 0.0)
        .map(|k| k as u64)
}

/// Wait until `target` fires `ok` (true) or one of `fail` (false).
async fn settle(target: &EventTarget, ok: &str, fail: &[&str]) -> bool {
    let (tx, rx) = oneshot::channel::<bool>();
    let tx = Rc::new(RefCell::new(Some(tx)));
    let handler = |outcome: bool| {
        let tx = Rc::clone(&tx);
        Closure::<dyn FnMut()>::new(move || {
            if let Some(tx) = tx.borrow_mut().take() {
                let _ = tx.send(outcome);
            }
        })
    };
    let on_ok = handler(true);
    let on_fail = handler(false);
    let _ = target.add_event_listener_with_callback(ok, on_ok.as_ref().unchecked_ref());
    for name in fail {
        let _ = target.add_event_listener_with_callback(name, on_fail.as_ref().unchecked_ref());
    }
    // Both senders live in the closures held here, so the channel only
    // ends by an outcome.
    let outcome = rx.await.unwrap_or(false);
    let _ = target.remove_event_listener_with_callback(ok, on_ok.as_ref().unchecked_ref());
    for name in fail {
        let _ = target.remove_event_listener_with_callback(name, on_fail.as_ref().unchecked_ref());
    }
    outcome
}

/// The result of an IndexedDB request.
async fn request(request: IdbRequest, what: &str) -> Result<JsValue, StoreError> {
    if settle(&request, "success", &["error"]).await {
        request.result().map_err(|e| js_error(what, &e))
    } else {
        let error = request.error().ok().flatten().map(JsValue::from);
        Err(js_error(what, &error.unwrap_or(JsValue::NULL)))
    }
}

/// Keeps the outbox in IndexedDB (the default in browsers): one database
/// per name, one transaction per [`Store::apply`], requested with
/// `durability: "strict"` and reported only once it is complete.
///
/// The database opens on the first `load` or `apply`; where IndexedDB is
/// missing (Node.js) or refused (some private modes) that fails with a
/// [`StoreError`], and the JS package falls back to memory with a warning.
#[derive(Debug)]
pub struct IndexedDbStore {
    name: String,
    db: Option<IdbDatabase>,
}

impl IndexedDbStore {
    /// A store on the database called `name` (e.g. one per app and URL).
    pub fn new(name: impl Into<String>) -> IndexedDbStore {
        IndexedDbStore {
            name: name.into(),
            db: None,
        }
    }

    /// Whether this JavaScript environment has `indexedDB` at all.
    pub fn is_available() -> bool {
        factory().is_some()
    }

    async fn database(&mut self) -> Result<IdbDatabase, StoreError> {
        if let Some(db) = &self.db {
            return Ok(db.clone());
        }
        let factory = factory().ok_or_else(|| StoreError("IndexedDB is not available".into()))?;
        let open: IdbOpenDbRequest = factory
            .open_with_u32(&self.name, 1)
            .map_err(|e| js_error("IndexedDB open", &e))?;
        let upgrade = {
            let open = open.clone();
            Closure::<dyn FnMut()>::new(move || {
                if let Ok(db) = open.result() {
                    let db: IdbDatabase = db.unchecked_into();
                    let _ = db.create_object_store(SESSIONS);
                    let _ = db.create_object_store(MESSAGES);
                }
            })
        };
        open.set_onupgradeneeded(Some(upgrade.as_ref().unchecked_ref()));
        let db = request(open.clone().into(), "IndexedDB open").await;
        open.set_onupgradeneeded(None);
        let db: IdbDatabase = db?.unchecked_into();
        self.db = Some(db.clone());
        Ok(db)
    }

    async fn load_now(&mut self) -> Result<Snapshot, StoreError> {
        let db = self.database().await?;
        let names = Array::of2(&SESSIONS.into(), &MESSAGES.into());
        let tx = db
            .transaction_with_str_sequence(&names)
            .map_err(|e| js_error("IndexedDB read", &e))?;
        let sessions = tx
            .object_store(SESSIONS)
            .map_err(|e| js_error("IndexedDB read", &e))?;
        let messages = tx
            .object_store(MESSAGES)
            .map_err(|e| js_error("IndexedDB read", &e))?;
        let read = |r: Result<IdbRequest, JsValue>| r.map_err(|e| js_error("IndexedDB read", &e));
        let session = read(sessions.get(&SESSION_KEY.into()))?;
        let keys = read(messages.get_all_keys())?;
        let values = read(messages.get_all())?;
        let session = request(session, "IndexedDB read").await?;
        let keys: Array = request(keys, "IndexedDB read").await?.unchecked_into();
        let values: Array = request(values, "IndexedDB read").await?.unchecked_into();
        let session = session.dyn_into::<Uint8Array>().ok().map(|s| s.to_vec());
        let messages: Vec<(u64, Vec<u8>)> = keys
            .iter()
            .zip(values.iter())
            .filter_map(|(k, v)| Some((seq_of(&k)?, v.dyn_into::<Uint8Array>().ok()?.to_vec())))
            .collect();
        Ok(decode(
            session.as_deref(),
            messages.iter().map(|(k, v)| (*k, v.as_slice())),
        ))
    }

    async fn apply_now(&mut self, ops: Vec<PersistOp>) -> Result<(), StoreError> {
        let db = self.database().await?;
        let names = Array::of2(&SESSIONS.into(), &MESSAGES.into());
        // `durability: "strict"`: complete means flushed to disk, which is
        // what a durable receipt promises (web-sys has no binding yet).
        let options = Object::new();
        let _ = Reflect::set(&options, &"durability".into(), &"strict".into());
        let transaction = Reflect::get(&db, &"transaction".into())
            .ok()
            .and_then(|f| f.dyn_into::<Function>().ok())
            .ok_or_else(|| StoreError("IndexedDB: no transaction()".into()))?
            .call3(&db, &names, &"readwrite".into(), &options)
            .map_err(|e| js_error("IndexedDB write", &e))?;
        let tx: web_sys::IdbTransaction = transaction.unchecked_into();
        let store = |name| -> Result<IdbObjectStore, StoreError> {
            tx.object_store(name)
                .map_err(|e| js_error("IndexedDB write", &e))
        };
        let sessions = store(SESSIONS)?;
        let messages = store(MESSAGES)?;
        for op in ops {
            let queued = match op {
                PersistOp::Session(session) => sessions.put_with_key(
                    &Uint8Array::from(session.encode().as_slice()),
                    &SESSION_KEY.into(),
                ),
                PersistOp::Put(message) => messages.put_with_key(
                    &Uint8Array::from(message.encode().as_slice()),
                    &key(message.seq),
                ),
                PersistOp::Delete { seq } => messages.delete(&key(seq)),
                PersistOp::Clear => messages.clear(),
            };
            if let Err(error) = queued {
                let _ = tx.abort();
                return Err(js_error("IndexedDB write", &error));
            }
        }
        if settle(&tx, "complete", &["error", "abort"]).await {
            Ok(())
        } else {
            let error = tx.error().map(JsValue::from).unwrap_or(JsValue::NULL);
            Err(js_error("IndexedDB write", &error))
        }
    }
}

impl Drop for IndexedDbStore {
    fn drop(&mut self) {
        if let Some(db) = self.db.take() {
            db.close();
        }
    }
}

fn factory() -> Option<IdbFactory> {
    Reflect::get(&js_sys::global(), &"indexedDB".into())
        .ok()
        .and_then(|f| f.dyn_into::<IdbFactory>().ok())
}

impl Store for IndexedDbStore {
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(self.load_now())
    }

    fn apply(&mut self, ops: Vec<PersistOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.apply_now(ops))
    }

    fn is_durable(&self) -> bool {
        true
    }
}

/// A store written in JavaScript. The object must have:
///
/// - `load(): Promise<{ session?: Uint8Array | null, messages: [number, Uint8Array][] }>`
/// - `apply(ops): Promise<void>`, applying in order, all or nothing, where
///   each op is `{ op: "session", value }`, `{ op: "put", seq, value }`,
///   `{ op: "delete", seq }` or `{ op: "clear" }` (`value` a `Uint8Array`
///   to keep as it is);
/// - optionally `durable: true` when what `apply` resolved survives a restart.
#[derive(Debug)]
pub struct JsStore {
    object: JsValue,
    load: Function,
    apply: Function,
    durable: bool,
}

impl JsStore {
    /// Wrap `object`; fails with a [`StoreError`] unless it has `load` and
    /// `apply` methods.
    pub fn new(object: JsValue) -> Result<JsStore, StoreError> {
        let method = |name: &str| {
            Reflect::get(&object, &name.into())
                .ok()
                .and_then(|f| f.dyn_into::<Function>().ok())
                .ok_or_else(|| StoreError(["a store object needs a ", name, "() method"].concat()))
        };
        let load = method("load")?;
        let apply = method("apply")?;
        let durable = Reflect::get(&object, &"durable".into())
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(false);
        Ok(JsStore {
            object,
            load,
            apply,
            durable,
        })
    }

    async fn call(
        &self,
        function: &Function,
        arg: &JsValue,
        what: &str,
    ) -> Result<JsValue, StoreError> {
        let returned = function
            .call1(&self.object, arg)
            .map_err(|e| js_error(what, &e))?;
        JsFuture::from(js_sys::Promise::resolve(&returned))
            .await
            .map_err(|e| js_error(what, &e))
    }

    async fn load_now(&mut self) -> Result<Snapshot, StoreError> {
        let loaded = self
            .call(&self.load, &JsValue::UNDEFINED, "store.load")
            .await?;
        let session = Reflect::get(&loaded, &"session".into())
            .ok()
            .and_then(|s| s.dyn_into::<Uint8Array>().ok())
            .map(|s| s.to_vec());
        let messages = Reflect::get(&loaded, &"messages".into())
            .ok()
            .and_then(|m| m.dyn_into::<Array>().ok())
            .unwrap_or_default();
        let messages: Vec<(u64, Vec<u8>)> = messages
            .iter()
            .filter_map(|entry| {
                let entry: Array = entry.dyn_into().ok()?;
                let bytes: Uint8Array = entry.get(1).dyn_into().ok()?;
                Some((seq_of(&entry.get(0))?, bytes.to_vec()))
            })
            .collect();
        Ok(decode(
            session.as_deref(),
            messages.iter().map(|(k, v)| (*k, v.as_slice())),
        ))
    }

    async fn apply_now(&mut self, ops: Vec<PersistOp>) -> Result<(), StoreError> {
        let list = Array::new();
        for op in ops {
            let entry = Object::new();
            let set = |name: &str, value: &JsValue| {
                let _ = Reflect::set(&entry, &name.into(), value);
            };
            match op {
                PersistOp::Session(session) => {
                    set("op", &"session".into());
                    set("value", &Uint8Array::from(session.encode().as_slice()));
                }
                PersistOp::Put(message) => {
                    set("op", &"put".into());
                    set("seq", &key(message.seq));
                    set("value", &Uint8Array::from(message.encode().as_slice()));
                }
                PersistOp::Delete { seq } => {
                    set("op", &"delete".into());
                    set("seq", &key(seq));
                }
                PersistOp::Clear => set("op", &"clear".into()),
            }
            list.push(&entry);
        }
        self.call(&self.apply, &list, "store.apply")
            .await
            .map(|_| ())
    }
}

impl Store for JsStore {
    fn load(&mut self) -> BoxFuture<'_, Result<Snapshot, StoreError>> {
        Box::pin(self.load_now())
    }

    fn apply(&mut self, ops: Vec<PersistOp>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.apply_now(ops))
    }

    fn is_durable(&self) -> bool {
        self.durable
    }
}

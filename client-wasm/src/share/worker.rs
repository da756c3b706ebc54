//! The shared worker's side (`worker.js` in the package): one client in the worker holds the
//! connection, configured by the first tab's `hello`, and hosts every tab that connects.
//! When the last tab closes, the browser ends the worker and its connection with it.

use litemap::LiteMap;
use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Reflect;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{MessageEvent, MessagePort};

use super::group::{Note, Ports};
use crate::client::{build, tick_ms};
use crate::options::Options;
use crate::shell::{self, drive, Shared, Sharing};

/// A port's message handler, kept until its tab leaves.
type Handler = Closure<dyn FnMut(MessageEvent)>;

/// The ports' handlers.
type Handlers = Rc<RefCell<Vec<(MessagePort, Handler)>>>;

/// The host in a shared worker. Not for applications: `worker.js` makes one.
#[wasm_bindgen]
pub struct SharedHost {
    client: Rc<RefCell<Option<Rc<Shared>>>>,
    ports: Ports,
    handlers: Handlers,
}

impl std::fmt::Debug for SharedHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedHost").finish_non_exhaustive()
    }
}

impl Default for SharedHost {
    fn default() -> Self {
        Self::new()
    }
}

#[wasm_bindgen]
impl SharedHost {
    /// A host with no tab yet.
    #[wasm_bindgen(constructor)]
    pub fn new() -> SharedHost {
        SharedHost {
            client: Rc::new(RefCell::new(None)),
            ports: Rc::new(RefCell::new(LiteMap::new())),
            handlers: Rc::new(RefCell::new(Vec::new())),
        }
    }

    /// A tab connected (the worker's `connect` event).
    pub fn attach(&self, port: MessagePort) {
        let client = Rc::clone(&self.client);
        let ports = Rc::clone(&self.ports);
        let from_port = port.clone();
        let handlers = Rc::downgrade(&self.handlers);
        let handler = Handler::new(move |event: MessageEvent| {
            let data = event.data();
            let field = |name: &str| {
                Reflect::get(&data, &JsValue::from_str(name))
                    .ok()
                    .and_then(|value| value.as_string())
                    .unwrap_or_default()
            };
            let note = Note {
                kind: field("kind"),
                from: field("from"),
                text: field("text"),
                message: JsValue::UNDEFINED,
            };
            if on_message(&client, &ports, &from_port, note) {
                // Its client closed: the port and its handler go (the handler is freed once this
                // call returns).
                from_port.set_onmessage(None);
                from_port.close();
                if let Some(handlers) = handlers.upgrade() {
                    handlers.borrow_mut().retain(|(port, _)| *port != from_port);
                }
            }
        });
        port.set_onmessage(Some(handler.as_ref().unchecked_ref()));
        port.start();
        self.handlers.borrow_mut().push((port, handler));
    }
}

/// Handles a tab's message; whether the tab is done with its port (`quit`).
fn on_message(
    client: &Rc<RefCell<Option<Rc<Shared>>>>,
    ports: &Ports,
    port: &MessagePort,
    note: Note,
) -> bool {
    if note.from.is_empty() {
        return false;
    }
    if note.kind == "hello" {
        ports.borrow_mut().insert(note.from.clone(), port.clone());
        if client.borrow().is_none() {
            *client.borrow_mut() = start(&note.text, ports);
        }
    }
    // `quit`: the tab's client closed, its port is done.
    if note.kind == "quit" {
        let mut ports = ports.borrow_mut();
        ports.retain(|_, used| used != port);
        return true;
    }
    let leaving = note.kind == "leave";
    let from = note.from.clone();
    let shared = client.borrow().clone();
    if let Some(shared) = shared {
        drive(&shared, |inner| inner.on_note(&shared, note));
    }
    if leaving {
        ports.borrow_mut().remove(&from);
    }
    false
}

/// The worker's client, from the first tab's `{url, options}`.
fn start(config: &str, ports: &Ports) -> Option<Rc<Shared>> {
    let config = js_sys::JSON::parse(config).ok()?;
    let url = Reflect::get(&config, &"url".into()).ok()?.as_string()?;
    let options = Reflect::get(&config, &"options".into()).ok()?;
    let parsed = Options::from_js(&options).ok()?;
    let shared = build(&url, &parsed).ok()?;
    if let Ok(mut inner) = shared.inner.try_borrow_mut() {
        inner.host_in_worker(Rc::clone(ports));
    }
    shell::start(&shared, false, Sharing::Off, "", tick_ms(&parsed));
    Some(shared)
}

//! The tabs of one origin that share a connection: through the package's shared worker,
//! which holds the connection, or (where there is no SharedWorker, or with `share: "tabs"`)
//! through a `BroadcastChannel` between them and a Web Lock that elects the host tab
//! (helpers in `js/share.js`). In the worker itself the group is the ports of its tabs.
//!
//! Messages are `{kind, from, to, text}`: a guest says `hello` and is answered `welcome` by
//! the host; `msg` carries the relay protocol both ways; `leave` and `bye` end a guest's and
//! the host's part; a new host announces itself with `host`, and guests connected to
//! another host (which died without a `bye`) connect again. A client closing its port to
//! the shared worker says `quit` last (`js/share.js`), so the worker lets go of the port.

use litemap::LiteMap;
use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Object, Reflect};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::MessagePort;

use super::host::Host;

#[wasm_bindgen(module = "/js/share.js")]
extern "C" {
    #[wasm_bindgen(js_name = shareSupported)]
    fn share_supported() -> bool;
    #[wasm_bindgen(js_name = shareConnect, catch)]
    fn share_connect(
        name: &str,
        id: &str,
        config: &str,
        use_worker: bool,
        on_message: &Function,
        on_host: &Function,
    ) -> Result<Handle, JsValue>;

    type Handle;
    #[wasm_bindgen(method)]
    fn post(this: &Handle, kind: &str, to: &str, text: &str);
    #[wasm_bindgen(method)]
    fn close(this: &Handle);
}

/// A message of the group, as the shell gets it.
#[derive(Debug)]
pub(crate) struct Note {
    pub(crate) kind: String,
    pub(crate) from: String,
    pub(crate) text: String,
    /// `text` as the JavaScript string it arrived as: a guest hands the relay's messages on
    /// to JavaScript from it ([`crate::parsed`]).
    pub(crate) message: JsValue,
}

/// This tab's part.
#[derive(Debug)]
pub(crate) enum Role {
    /// Another tab holds the connection; `host` once it welcomed us.
    Guest { host: Option<String> },
    /// This tab holds it.
    Host(Host),
}

/// The shared worker's id in its group.
pub(crate) const WORKER_ID: &str = "worker";

/// The ports of a shared worker's tabs, by their ids.
pub(crate) type Ports = Rc<RefCell<LiteMap<String, MessagePort>>>;

/// How this member reaches the others.
enum Backend {
    /// A tab: the worker's port or the BroadcastChannel, behind one JavaScript handle.
    Tab {
        handle: Handle,
        _on_message: Closure<dyn FnMut(String, String, String, JsValue)>,
        _on_host: Closure<dyn FnMut()>,
    },
    /// The shared worker: one port per tab.
    Worker(Ports),
}

/// Membership of the group.
pub(crate) struct Group {
    backend: Backend,
    /// This client's id in the group.
    pub(crate) id: String,
    pub(crate) role: Role,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("id", &self.id)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// Joins the group of `relay` and `token` (tabs with another token share another
    /// connection): through the shared worker when `use_worker` and the browser has one
    /// (`config`, the client's URL and options as JSON, configures the worker's connection),
    /// else by election, if this browser has BroadcastChannel and Web Locks.
    pub(crate) fn join(
        relay: &str,
        token: Option<&str>,
        id: String,
        config: &str,
        use_worker: bool,
        on_note: impl Fn(Note) + 'static,
        on_host: impl Fn() + 'static,
    ) -> Option<Self> {
        if !share_supported() {
            return None;
        }
        let name = format!("tidewire:share:{relay}:{:016x}", fnv(token.unwrap_or("")));
        let on_message = Closure::<dyn FnMut(String, String, String, JsValue)>::new(
            move |kind: String, from: String, _to: String, message: JsValue| {
                let text = message.as_string().unwrap_or_default();
                on_note(Note {
                    kind,
                    from,
                    text,
                    message,
                });
            },
        );
        let on_host = Closure::<dyn FnMut()>::new(on_host);
        let handle = share_connect(
            &name,
            &id,
            config,
            use_worker,
            on_message.as_ref().unchecked_ref(),
            on_host.as_ref().unchecked_ref(),
        )
        .ok()?;
        Some(Self {
            backend: Backend::Tab {
                handle,
                _on_message: on_message,
                _on_host: on_host,
            },
            id,
            role: Role::Guest { host: None },
        })
    }

    /// The group of a shared worker: it hosts, its tabs are `ports`.
    pub(crate) fn worker(ports: Ports) -> Self {
        Self {
            backend: Backend::Worker(ports),
            id: WORKER_ID.into(),
            role: Role::Host(Host::default()),
        }
    }

    /// Sends `kind` to `to` (empty: everyone).
    pub(crate) fn post(&self, kind: &str, to: &str, text: &str) {
        match &self.backend {
            Backend::Tab { handle, .. } => handle.post(kind, to, text),
            Backend::Worker(ports) => {
                let message = Object::new();
                for (field, value) in [("kind", kind), ("from", self.id.as_str()), ("text", text)] {
                    let _ = Reflect::set(&message, &field.into(), &value.into());
                }
                let ports = ports.borrow();
                let targets: Vec<&MessagePort> = if to.is_empty() {
                    ports.values().collect()
                } else {
                    ports.get(to).into_iter().collect()
                };
                for port in targets {
                    let _ = port.post_message(&message);
                }
            }
        }
    }

    /// Leaves: the host says `bye` (its guests connect to the next host), a guest `leave`.
    pub(crate) fn leave(&self) {
        match &self.role {
            Role::Host(_) => self.post("bye", "", ""),
            Role::Guest { host } => self.leave_host(host.as_deref()),
        }
    }
}

impl Group {
    /// A guest leaves its host, or, before any host welcomed it, whoever got its `hello`
    /// (which may have taken it in already).
    pub(crate) fn leave_host(&self, host: Option<&str>) {
        self.post("leave", host.unwrap_or_default(), "");
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.leave();
        if let Backend::Tab { handle, .. } = &self.backend {
            handle.close();
        }
    }
}

/// FNV-1a, to name the group after the token without putting the token in the name.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

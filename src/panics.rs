//! Catching the app's panics: a panic in app code (a handler, a response body, a factory) is
//! caught where it happens and logged once, with the request it belongs to, instead of taking
//! down the worker or the other requests on it. The worker's panic hook and the thread-local
//! record it leaves for that one log line live here.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};

thread_local! {
    /// True while the app's code runs under [`in_handler`], where a panic is caught and logged
    /// with its request.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
    /// The last caught panic's message and location, left by the panic hook.
    static PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `f`, an app's factory, catching a panic; the error is the panic's message.
pub(crate) fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    in_handler(|| catch_unwind(AssertUnwindSafe(f))).map_err(|_| take_message())
}

pub(crate) fn in_handler<T>(f: impl FnOnce() -> T) -> T {
    let outer = IN_HANDLER.replace(true);
    let result = f();
    IN_HANDLER.set(outer);
    result
}

/// Installs the worker's panic hook: a panic in a handler is kept for the one log line that
/// names its request; any other panic is logged at once.
pub(crate) fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(non-string panic payload)".into());
        let message = match info.location() {
            Some(at) => format!("{message} at {}:{}", at.file(), at.line()),
            None => message,
        };
        if IN_HANDLER.get() {
            PANIC.with(|p| *p.borrow_mut() = Some(message));
        } else {
            tracing::error!("panic: {message}");
        }
    }));
}

/// The message of the last panic caught under [`in_handler`], if the hook kept one.
pub(crate) fn take_message() -> String {
    PANIC.with(|p| p.borrow_mut().take()).unwrap_or_default()
}

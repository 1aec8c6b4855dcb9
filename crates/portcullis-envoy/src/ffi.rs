//! The C ABI of Envoy's dynamic modules (Envoy 1.40, `v0.2.0`), and the only `unsafe` code of the module.
//!
//! Written from the facts of Envoy's `source/extensions/dynamic_modules/abi.h`: our own declarations of
//! the few callbacks we call, and the event hooks Envoy calls (`envoy_dynamic_module_on_*`, looked up by
//! name). Each hook turns Envoy's pointers into safe values and calls `filter`; each catches panics, and
//! a panic on a request answers 500 (fail closed: the request never goes upstream).
//!
//! Ownership, as the ABI states it:
//! - a config pointer we return is ours (a `Box<Shared>`) until `..._config_destroy`;
//! - a filter pointer we return is ours (a `Box<Filter>`) until `..._filter_destroy`; Envoy keeps the
//!   config alive while its filters live;
//! - buffers Envoy hands us (header names and values, the filter config) are valid until the hook
//!   returns, or until we call a setter: we copy what we keep.

#![allow(unsafe_code)]

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

use crate::filter::{self, Next, Shared, Stream};
use crate::host::Level;
use portcullis_core::Headers;

/// `envoy_dynamic_module_type_envoy_buffer` / `_module_buffer`: bytes owned by one side.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    ptr: *const c_char,
    length: usize,
}

/// `envoy_dynamic_module_type_{envoy,module}_http_header`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HttpHeader {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

/// `envoy_dynamic_module_type_http_header_type_RequestHeader`.
const REQUEST_HEADER: u32 = 0;
/// `..._request_headers_status_Continue` / `_StopIteration` (every other `*_status_Continue` is 0 too).
const STATUS_CONTINUE: u32 = 0;
const STATUS_STOP_ITERATION: u32 = 1;
/// `..._request_headers_status_StopAllIterationAndBuffer`: a paused request. Envoy buffers its body
/// and trailers and calls no later hook of ours for them until we continue decoding.
const STATUS_STOP_ALL_ITERATION_AND_BUFFER: u32 = 3;
/// `..._request_body_status_StopIterationAndBuffer` and `..._request_trailers_status_StopIteration`
/// (both 1): what the body and trailer hooks answer while a decision is in flight, should Envoy call
/// them (a `Continue` there would send the headers on undecided).
const BODY_STOP_ITERATION_AND_BUFFER: u32 = 1;
const TRAILERS_STOP_ITERATION: u32 = 1;

/// `envoy_dynamic_module_type_log_level`.
fn level(level: Level) -> u32 {
    match level {
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warn => 3,
        Level::Error => 4,
    }
}

/// The callbacks we call, found by name in the Envoy process when the module is loaded rather than
/// linked: a module linked against missing callbacks fails `dlopen` with a bare "undefined symbol",
/// while looking them up lets program init say which Envoy this build is for.
type LogFn = unsafe extern "C" fn(level: u32, message: Buffer);
type GetHeadersSizeFn = unsafe extern "C" fn(filter: *mut c_void, kind: u32) -> usize;
type GetHeadersFn =
    unsafe extern "C" fn(filter: *mut c_void, kind: u32, result: *mut HttpHeader) -> bool;
type SetHeaderFn =
    unsafe extern "C" fn(filter: *mut c_void, kind: u32, key: Buffer, value: Buffer) -> bool;
type SendResponseFn = unsafe extern "C" fn(
    filter: *mut c_void,
    status: u32,
    headers: *mut HttpHeader,
    headers_size: usize,
    body: Buffer,
    details: Buffer,
);

type FilterFn = unsafe extern "C" fn(filter: *mut c_void);
type RouteConfigFn = unsafe extern "C" fn(filter: *mut c_void) -> *const c_void;
type SchedulerNewFn = unsafe extern "C" fn(filter: *mut c_void) -> *mut c_void;
type SchedulerCommitFn = unsafe extern "C" fn(scheduler: *mut c_void, event_id: u64);
type SchedulerDeleteFn = unsafe extern "C" fn(scheduler: *mut c_void);

type DefineMetricFn = unsafe extern "C" fn(
    config: *mut c_void,
    name: Buffer,
    label_names: *mut Buffer,
    label_names_length: usize,
    counter_id: *mut usize,
) -> u32;
type UpdateMetricFn = unsafe extern "C" fn(
    filter: *mut c_void,
    id: usize,
    label_values: *mut Buffer,
    label_values_length: usize,
    value: u64,
) -> u32;

struct Callbacks {
    define_counter: DefineMetricFn,
    increment_counter: UpdateMetricFn,
    define_histogram: DefineMetricFn,
    record_histogram: UpdateMetricFn,
    log: LogFn,
    get_headers_size: GetHeadersSizeFn,
    get_headers: GetHeadersFn,
    set_header: SetHeaderFn,
    send_response: SendResponseFn,
    continue_decoding: FilterFn,
    route_config: RouteConfigFn,
    scheduler_new: SchedulerNewFn,
    scheduler_commit: SchedulerCommitFn,
    scheduler_delete: SchedulerDeleteFn,
}

static CALLBACKS: OnceLock<Callbacks> = OnceLock::new();

extern "C" {
    /// libc's symbol lookup (every Envoy links it; the module gets it through std).
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
}

/// glibc's `RTLD_DEFAULT`: search the process's global symbols (Envoy exports its callbacks).
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

/// Finds every callback, or names the first one this Envoy does not have.
fn resolve() -> Result<Callbacks, &'static str> {
    fn find(name: &'static CStr) -> Result<*mut c_void, &'static str> {
        // SAFETY: `name` is NUL-terminated; dlsym only reads it.
        let found = unsafe { dlsym(RTLD_DEFAULT, name.as_ptr()) };
        if found.is_null() {
            Err(name.to_str().unwrap_or("?"))
        } else {
            Ok(found)
        }
    }
    // SAFETY: each symbol has the C signature abi.h (v0.2.0) declares for it, which the field's type
    // spells; a function pointer and a data pointer have the same size on every platform Envoy runs on.
    unsafe {
        Ok(Callbacks {
            define_counter: std::mem::transmute::<*mut c_void, DefineMetricFn>(find(
                c"envoy_dynamic_module_callback_http_filter_config_define_counter",
            )?),
            increment_counter: std::mem::transmute::<*mut c_void, UpdateMetricFn>(find(
                c"envoy_dynamic_module_callback_http_filter_increment_counter",
            )?),
            define_histogram: std::mem::transmute::<*mut c_void, DefineMetricFn>(find(
                c"envoy_dynamic_module_callback_http_filter_config_define_histogram",
            )?),
            record_histogram: std::mem::transmute::<*mut c_void, UpdateMetricFn>(find(
                c"envoy_dynamic_module_callback_http_filter_record_histogram_value",
            )?),
            log: std::mem::transmute::<*mut c_void, LogFn>(find(
                c"envoy_dynamic_module_callback_log",
            )?),
            get_headers_size: std::mem::transmute::<*mut c_void, GetHeadersSizeFn>(find(
                c"envoy_dynamic_module_callback_http_get_headers_size",
            )?),
            get_headers: std::mem::transmute::<*mut c_void, GetHeadersFn>(find(
                c"envoy_dynamic_module_callback_http_get_headers",
            )?),
            set_header: std::mem::transmute::<*mut c_void, SetHeaderFn>(find(
                c"envoy_dynamic_module_callback_http_set_header",
            )?),
            send_response: std::mem::transmute::<*mut c_void, SendResponseFn>(find(
                c"envoy_dynamic_module_callback_http_send_response",
            )?),
            continue_decoding: std::mem::transmute::<*mut c_void, FilterFn>(find(
                c"envoy_dynamic_module_callback_http_filter_continue_decoding",
            )?),
            route_config: std::mem::transmute::<*mut c_void, RouteConfigFn>(find(
                c"envoy_dynamic_module_callback_get_most_specific_route_config",
            )?),
            scheduler_new: std::mem::transmute::<*mut c_void, SchedulerNewFn>(find(
                c"envoy_dynamic_module_callback_http_filter_scheduler_new",
            )?),
            scheduler_commit: std::mem::transmute::<*mut c_void, SchedulerCommitFn>(find(
                c"envoy_dynamic_module_callback_http_filter_scheduler_commit",
            )?),
            scheduler_delete: std::mem::transmute::<*mut c_void, SchedulerDeleteFn>(find(
                c"envoy_dynamic_module_callback_http_filter_scheduler_delete",
            )?),
        })
    }
}

/// The callbacks; program init resolved them before Envoy calls any other hook.
fn callbacks() -> &'static Callbacks {
    CALLBACKS
        .get()
        .expect("program init resolves the callbacks before any other hook")
}

impl Buffer {
    fn of(s: &str) -> Buffer {
        Buffer {
            ptr: s.as_ptr().cast(),
            length: s.len(),
        }
    }

    const NULL: Buffer = Buffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes of a buffer Envoy owns.
    ///
    /// # Safety
    /// `ptr` is null or valid for `length` bytes for the lifetime the caller picks (the current hook).
    unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            &[]
        } else {
            // SAFETY: the caller's contract.
            unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.length) }
        }
    }
}

/// Writes to Envoy's log.
pub fn log(at: Level, message: &str) {
    match CALLBACKS.get() {
        // SAFETY: the message buffer is valid for the call; Envoy copies it.
        Some(c) => unsafe { (c.log)(level(at), Buffer::of(message)) },
        None => eprintln!("portcullis-envoy: {message}"),
    }
}

/// One Envoy stream, through the callbacks. Valid only inside a hook of that stream; with its config's
/// metric ids.
struct EnvoyStream(*mut c_void, Metrics);

impl Stream for EnvoyStream {
    fn with_request_headers<R>(&self, f: impl FnOnce(Headers<'_>) -> R) -> R {
        // SAFETY: `self.0` is the live stream of the current hook; the array is sized by Envoy's own
        // count; the buffers it fills stay valid until a setter is called, and none is called while
        // `f` runs (it only reads; the stream is borrowed shared).
        let raw = unsafe {
            let c = callbacks();
            let n = (c.get_headers_size)(self.0, REQUEST_HEADER);
            let mut raw = vec![
                HttpHeader {
                    key_ptr: std::ptr::null(),
                    key_length: 0,
                    value_ptr: std::ptr::null(),
                    value_length: 0,
                };
                n
            ];
            if n > 0 && !(c.get_headers)(self.0, REQUEST_HEADER, raw.as_mut_ptr()) {
                raw.clear();
            }
            raw
        };
        let bytes = |ptr, length| {
            // SAFETY: as above: Envoy's buffers, valid for this hook.
            unsafe { Buffer { ptr, length }.bytes() }
        };
        let borrowed: Option<Vec<(&str, &str)>> = raw
            .iter()
            .map(|h| {
                Some((
                    std::str::from_utf8(bytes(h.key_ptr, h.key_length)).ok()?,
                    std::str::from_utf8(bytes(h.value_ptr, h.value_length)).ok()?,
                ))
            })
            .collect();
        match borrowed {
            Some(pairs) => f(Headers::Pairs(&pairs)),
            None => {
                let owned: Vec<(String, String)> = raw
                    .iter()
                    .map(|h| {
                        (
                            String::from_utf8_lossy(bytes(h.key_ptr, h.key_length)).into_owned(),
                            String::from_utf8_lossy(bytes(h.value_ptr, h.value_length))
                                .into_owned(),
                        )
                    })
                    .collect();
                f(Headers::List(&owned))
            }
        }
    }

    fn set_request_header(&mut self, name: &str, value: &str) -> bool {
        // SAFETY: live stream; both buffers valid for the call (Envoy copies them).
        unsafe {
            (callbacks().set_header)(self.0, REQUEST_HEADER, Buffer::of(name), Buffer::of(value))
        }
    }

    fn remove_request_header(&mut self, name: &str) {
        // SAFETY: live stream; a null value removes the header (abi.h, `http_set_header`).
        unsafe {
            (callbacks().set_header)(self.0, REQUEST_HEADER, Buffer::of(name), Buffer::NULL);
        }
    }

    fn count_decision(&mut self, decision: &str, reason: &str, route: &str, micros: u64) {
        let c = callbacks();
        if let Some(id) = self.1.decisions {
            let mut labels = [Buffer::of(decision), Buffer::of(reason), Buffer::of(route)];
            // SAFETY: live stream; `id` was defined on this stream's config with these three labels;
            // the buffers borrow from the arguments, alive for the call.
            unsafe {
                (c.increment_counter)(self.0, id, labels.as_mut_ptr(), labels.len(), 1);
            }
        }
        if let Some(id) = self.1.duration {
            let mut labels = [Buffer::of(decision)];
            // SAFETY: as above, with the histogram's one label.
            unsafe {
                (c.record_histogram)(self.0, id, labels.as_mut_ptr(), labels.len(), micros);
            }
        }
    }

    fn send_response(&mut self, status: u16, headers: &[(&str, &str)], body: &str) {
        let mut raw: Vec<HttpHeader> = headers
            .iter()
            .map(|(k, v)| HttpHeader {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
        // SAFETY: live stream; every buffer borrows from `headers`/`body`, alive for the call.
        unsafe {
            (callbacks().send_response)(
                self.0,
                u32::from(status),
                raw.as_mut_ptr(),
                raw.len(),
                Buffer::of(body),
                Buffer::of("portcullis"),
            );
        }
    }
}

/// A filter config: the decision engine and its metric ids.
struct Config {
    shared: Shared,
    metrics: Metrics,
}

/// The ids Envoy gave a config's metrics; `None` where it refused one (it is then not recorded).
#[derive(Clone, Copy)]
struct Metrics {
    /// `portcullis_decisions` by decision, reason, route.
    decisions: Option<usize>,
    /// `portcullis_check_duration_us` by decision.
    duration: Option<usize>,
}

/// The per-stream state: which config decides it, and the decision in flight while it is paused.
struct Filter {
    config: *const Config,
    paused: Option<Arc<Mutex<Slot>>>,
}

/// Where a paused decision leaves its result for the stream's worker. Shared by the filter and the
/// background task; whichever drops it last frees it.
#[derive(Default)]
struct Slot {
    /// The filter was destroyed (the stream ended before the answer): the result is dropped and the
    /// scheduler not committed.
    gone: bool,
    decided: Option<Result<filter::Decided, crate::runner::Failed>>,
    started: Option<std::time::Instant>,
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A stream's scheduler (`envoy_dynamic_module_callback_http_filter_scheduler_new`): allocated by
/// Envoy, owned by us, deleted on drop. It holds a weak reference to the filter, so committing after
/// the stream ended schedules nothing (abi.h; `on_http_filter_scheduled` is never called for a
/// destroyed filter).
struct Scheduler(*mut c_void);

// SAFETY: abi.h makes the scheduler the cross-thread handle: commit and delete may be called from any
// thread; it holds no reference to the stream's memory beyond Envoy's own weak pointer.
unsafe impl Send for Scheduler {}

impl Scheduler {
    fn commit(&self) {
        // SAFETY: a live scheduler of ours (deleted only on drop).
        unsafe { (callbacks().scheduler_commit)(self.0, 0) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: ours, deleted once.
            unsafe { (callbacks().scheduler_delete)(self.0) }
        }
    }
}

/// Pauses the stream: `pending` is driven on the background runtime, which leaves its result in the
/// filter's slot and commits the stream's scheduler; `on_http_filter_scheduled` then writes it.
fn pause(filter_envoy: *mut c_void, filter: &mut Filter, pending: filter::Pending) {
    let slot = Arc::new(Mutex::new(Slot {
        started: Some(std::time::Instant::now()),
        ..Slot::default()
    }));
    filter.paused = Some(Arc::clone(&slot));
    // SAFETY: the live stream of the current hook.
    let scheduler = Scheduler(unsafe { (callbacks().scheduler_new)(filter_envoy) });
    crate::runner::resume(pending.decision, move |result| {
        let mut slot = lock(&slot);
        // Under the lock: the filter's destroy hook sets `gone` under it too, so no commit happens
        // once the stream is gone (nor can its worker be shutting down under us).
        if !slot.gone {
            slot.decided = Some(result);
            scheduler.commit();
        }
        drop(slot);
        drop(scheduler);
    });
}

/// Defines a config's metrics: `portcullis_decisions` (a counter by decision, reason and route) and
/// `portcullis_check_duration_us` (a histogram of the time to decide, by decision).
fn define_metrics(config_envoy: *mut c_void) -> Metrics {
    let define = |define: DefineMetricFn, name: &str, label_names: &[&str]| {
        let mut labels: Vec<Buffer> = label_names.iter().map(|l| Buffer::of(l)).collect();
        let mut id = 0usize;
        // SAFETY: Envoy's config pointer of the current config_new hook; the buffers are alive for
        // the call; `id` is written by Envoy on success (0 is `Success`).
        let result = unsafe {
            define(
                config_envoy,
                Buffer::of(name),
                labels.as_mut_ptr(),
                labels.len(),
                &mut id,
            )
        };
        if result == 0 {
            Some(id)
        } else {
            log(
                Level::Warn,
                &format!("portcullis: Envoy did not define `{name}`; it is not recorded"),
            );
            None
        }
    };
    let c = callbacks();
    Metrics {
        decisions: define(
            c.define_counter,
            "portcullis_decisions",
            &["decision", "reason", "route"],
        ),
        duration: define(
            c.define_histogram,
            "portcullis_check_duration_us",
            &["decision"],
        ),
    }
}

// ------------------------------------------------------------------------------------------------
// Event hooks

/// Program init: finds the callbacks this build uses, and returns our ABI version (Envoy compares it
/// with its own). An Envoy without them (another minor version) gets null, so it refuses the module,
/// and a line on stderr saying why.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    static VERSION: &CStr = c"v0.2.0";
    let resolved = catch_unwind(resolve).unwrap_or(Err("(a panic while looking up callbacks)"));
    match resolved {
        Ok(found) => {
            let _ = CALLBACKS.set(found);
            crate::host::set_log(log);
            crate::host::install_decision_log();
            debug_assert_eq!(VERSION.to_bytes(), crate::ABI_VERSION.as_bytes());
            VERSION.as_ptr()
        }
        Err(missing) => {
            eprintln!(
                "portcullis-envoy: this build is for Envoy 1.40 (dynamic modules ABI {}), and this Envoy \
                 has no `{missing}`: build portcullis-envoy for this Envoy's version",
                crate::ABI_VERSION
            );
            std::ptr::null()
        }
    }
}

/// A filter config: the portcullis runtime, or null (Envoy refuses the filter) with our messages logged.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    name: Buffer,
    config: Buffer,
) -> *const c_void {
    let built = catch_unwind(|| {
        // SAFETY: Envoy's buffers are valid for this hook; both are copied or parsed before it returns.
        let (name, config) = unsafe { (name.bytes(), config.bytes()) };
        if name != b"portcullis" {
            log(
                Level::Error,
                &format!(
                    "portcullis: unknown filter_name `{}`; this module has one filter, `portcullis`",
                    String::from_utf8_lossy(name)
                ),
            );
            return None;
        }
        let shared = Shared::from_filter_config(config)?;
        Some(Config {
            shared,
            metrics: define_metrics(config_envoy),
        })
    });
    match built {
        Ok(Some(config)) => Box::into_raw(Box::new(config)) as *const c_void,
        Ok(None) => std::ptr::null(),
        Err(_) => {
            log(
                Level::Error,
                "portcullis: building the filter config panicked; the filter is refused",
            );
            std::ptr::null()
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    if config.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: `config` came from Box::into_raw in config_new and Envoy destroys it once.
        drop(unsafe { Box::from_raw(config as *mut Config) });
    });
}

/// A route's per-route config (`{route: NAME}` or `{disabled: true}`), or null (Envoy refuses it) with
/// our message logged. Envoy gives this hook no filter config, so a route name is checked against the
/// filter's portcullis configuration when a request uses it (unknown: 500, see `filter`).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    name: Buffer,
    config: Buffer,
) -> *const c_void {
    let built = catch_unwind(|| {
        // SAFETY: Envoy's buffers are valid for this hook; both are parsed before it returns.
        let (name, config) = unsafe { (name.bytes(), config.bytes()) };
        if name != b"portcullis" {
            log(
                Level::Error,
                &format!(
                    "portcullis: unknown per_route_config_name `{}`; this module has one filter, `portcullis`",
                    String::from_utf8_lossy(name)
                ),
            );
            return None;
        }
        match crate::settings::per_route(config) {
            Ok(per_route) => Some(per_route),
            Err(errors) => {
                log(
                    Level::Error,
                    &format!("portcullis: the per-route config is refused: {errors}"),
                );
                None
            }
        }
    });
    match built {
        Ok(Some(per_route)) => Box::into_raw(Box::new(per_route)) as *const c_void,
        Ok(None) | Err(_) => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(
    config: *const c_void,
) {
    if config.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: `config` came from Box::into_raw in per_route_config_new; Envoy destroys it once.
        drop(unsafe { Box::from_raw(config as *mut crate::settings::PerRoute) });
    });
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter_envoy: *mut c_void,
) -> *const c_void {
    if config.is_null() {
        return std::ptr::null();
    }
    Box::into_raw(Box::new(Filter {
        config: config.cast(),
        paused: None,
    })) as *const c_void
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: `filter` is our Box<Filter> from filter_new, used only on this stream's worker thread
    // (every hook of a stream runs there); its config outlives it (Envoy holds it).
    let filter = unsafe { &mut *(filter as *mut Filter) };
    // SAFETY: as above.
    let config = unsafe { &*filter.config };
    let mut stream = EnvoyStream(filter_envoy, config.metrics);
    let decided = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the live stream of the current hook. A non-null answer is a pointer we returned from
        // per_route_config_new (a Box<PerRoute>), which Envoy keeps alive with the route, so for the
        // whole hook; it is only read here (its name is copied into a paused decision).
        let per_route = unsafe {
            let found = (callbacks().route_config)(filter_envoy);
            (!found.is_null()).then(|| &*(found as *const crate::settings::PerRoute))
        };
        match filter::on_request_headers(&config.shared, per_route, &mut stream) {
            Next::Pause(pending) => {
                pause(filter_envoy, filter, pending);
                STATUS_STOP_ALL_ITERATION_AND_BUFFER
            }
            Next::Continue => STATUS_CONTINUE,
            Next::Stop => STATUS_STOP_ITERATION,
        }
    }));
    match decided {
        Ok(status) => status,
        Err(_) => {
            log(
                Level::Error,
                "portcullis: a check panicked; the request is denied (500)",
            );
            let _ = catch_unwind(AssertUnwindSafe(|| {
                stream.send_response(500, &[], "");
            }));
            STATUS_STOP_ITERATION
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: *const c_void) {
    if filter.is_null() {
        return;
    }
    let _ = catch_unwind(|| {
        // SAFETY: `filter` came from Box::into_raw in filter_new and Envoy destroys it once.
        let filter = unsafe { Box::from_raw(filter as *mut Filter) };
        if let Some(slot) = &filter.paused {
            // A decision still in flight: its result is dropped, its scheduler never committed.
            lock(slot).gone = true;
        }
    });
}

// The hooks below have nothing to do for this filter; Envoy resolves them by name.

/// Whether the stream's decision is still in flight.
fn is_paused(filter: *const c_void) -> bool {
    // SAFETY: our Box<Filter> from filter_new, on its stream's worker thread.
    !filter.is_null() && unsafe { (*(filter as *const Filter)).paused.is_some() }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _: *mut c_void,
    filter: *const c_void,
    _: bool,
) -> u32 {
    if is_paused(filter) {
        BODY_STOP_ITERATION_AND_BUFFER
    } else {
        STATUS_CONTINUE
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _: *mut c_void,
    filter: *const c_void,
) -> u32 {
    if is_paused(filter) {
        TRAILERS_STOP_ITERATION
    } else {
        STATUS_CONTINUE
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _: *mut c_void,
    _: *const c_void,
    _: bool,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _: *mut c_void,
    _: *const c_void,
    _: bool,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _: *mut c_void,
    _: *const c_void,
) -> u32 {
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _: *mut c_void,
    _: *const c_void,
) {
}

/// A paused decision finished: its answer is written on the stream's worker, and the request
/// continues (an allow) or has its local reply (a denial, 503, or 500 for a panic).
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy: *mut c_void,
    filter: *const c_void,
    _event_id: u64,
) {
    if filter.is_null() {
        return;
    }
    // SAFETY: our live Box<Filter> (Envoy calls this hook only for a filter not yet destroyed), on its
    // stream's worker thread; its config outlives it.
    let filter = unsafe { &mut *(filter as *mut Filter) };
    // SAFETY: as above.
    let config = unsafe { &*filter.config };
    let Some(slot) = filter.paused.take() else {
        return;
    };
    let (decided, started) = {
        let mut slot = lock(&slot);
        (slot.decided.take(), slot.started)
    };
    let mut stream = EnvoyStream(filter_envoy, config.metrics);
    let written = catch_unwind(AssertUnwindSafe(|| match decided {
        Some(Ok(decided)) => match decided.write(&mut stream) {
            // SAFETY: the live stream of the current hook.
            Next::Continue => unsafe { (callbacks().continue_decoding)(filter_envoy) },
            Next::Stop | Next::Pause(_) => {}
        },
        Some(Err(failed)) => {
            log(
                Level::Error,
                &format!(
                    "portcullis: a paused check failed ({failed:?}); the request is denied (500)"
                ),
            );
            filter::panicked(&mut stream, started.unwrap_or_else(std::time::Instant::now));
        }
        None => filter::panicked(&mut stream, started.unwrap_or_else(std::time::Instant::now)),
    }));
    if written.is_err() {
        log(
            Level::Error,
            "portcullis: writing a paused check's answer panicked; the request is denied (500)",
        );
        let _ = catch_unwind(AssertUnwindSafe(|| stream.send_response(500, &[], "")));
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: u32,
    _: *mut HttpHeader,
    _: usize,
    _: *mut Buffer,
    _: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: *mut c_void,
    _: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: *mut c_void,
    _: *const c_void,
) {
}

/// `..._local_reply_status_Continue`: a local reply (ours or another filter's) is sent as is. One
/// sent while our decision is in flight (Envoy's route timeout, say) ends the pause: the decision's
/// result is dropped and never written over the reply.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _: *mut c_void,
    filter: *const c_void,
    _: u32,
    _: Buffer,
    _: bool,
) -> u32 {
    if !filter.is_null() {
        let _ = catch_unwind(|| {
            // SAFETY: our live Box<Filter>, on its stream's worker thread.
            let filter = unsafe { &mut *(filter as *mut Filter) };
            if let Some(slot) = filter.paused.take() {
                lock(&slot).gone = true;
            }
        });
    }
    STATUS_CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *mut HttpHeader,
    _: usize,
    _: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *const Buffer,
    _: usize,
    _: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: *mut HttpHeader,
    _: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: *mut c_void,
    _: *const c_void,
    _: u64,
    _: u32,
) {
}

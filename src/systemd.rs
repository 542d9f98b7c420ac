//! The service manager's notification protocol (systemd `Type=notify`, sd_notify(3)), through the
//! `sd-notify` crate: `READY=1` once the component stream is up, `STATUS=` on each (re)connection
//! and loss, `STOPPING=1` on shutdown, and `WATCHDOG=1` at half the interval systemd asks for
//! (`WatchdogSec=`). Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use std::sync::atomic::{AtomicBool, Ordering};

use sd_notify::NotifyState;

static READY: AtomicBool = AtomicBool::new(false);

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!("service manager notification failed: {e}");
    }
}

/// The component stream is up: ready (the first time) and why.
pub fn connected(status: &str) {
    if READY.swap(true, Ordering::SeqCst) {
        send(&[NotifyState::Status(status)]);
    } else {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }
}

/// The stream is down: stratus still runs and reconnects.
pub fn disconnected(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Feeds the watchdog when the service manager asked for one; the task proves the runtime still
/// schedules work.
pub fn start_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}

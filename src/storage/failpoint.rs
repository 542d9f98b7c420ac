//! Named fail points: a backend calls `check(name)` between two of its storage steps; a test arms
//! a name and the next check of it fails as a storage outage would. Compiled in unit tests only:
//! in every other build `FailPoints` is empty and `check` is `Ok(())`, so nothing of it reaches the
//! hot path. Each store owns its own set, so tests running in parallel cannot arm each other's.

use super::StoreResult;

#[derive(Default)]
pub struct FailPoints {
    #[cfg(test)]
    armed: std::sync::Mutex<std::collections::HashMap<&'static str, u32>>,
}

impl FailPoints {
    /// Fails when `name` is armed and its remaining passes are used up (then disarms it).
    #[inline]
    pub fn check(&self, #[allow(unused_variables)] name: &'static str) -> StoreResult<()> {
        #[cfg(test)]
        {
            let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(passes) = armed.get_mut(name) {
                if *passes == 0 {
                    armed.remove(name);
                    return Err(super::StoreError::Unavailable(format!(
                        "fail point {name} (test)"
                    )));
                }
                *passes -= 1;
            }
        }
        Ok(())
    }

    /// Arms `name`: its check passes `passes` times, then fails once.
    #[cfg(test)]
    pub fn arm(&self, name: &'static str, passes: u32) {
        self.armed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, passes);
    }

    /// True when `name` was armed and has not fired yet.
    #[cfg(test)]
    pub fn is_armed(&self, name: &'static str) -> bool {
        self.armed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(name)
    }
}

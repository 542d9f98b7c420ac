//! Unit tests of `load`.

use super::*;

#[test]
fn process_cpu_counts_every_thread_even_ended_ones() {
    let me = std::process::id();
    let before = process_cpu(me).unwrap();
    // Busy for 300 ms in a thread that then ends: its time stays the process's.
    std::thread::spawn(|| {
        let until = Instant::now() + Duration::from_millis(300);
        let mut x = 0u64;
        while Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    })
    .join()
    .unwrap();
    let after = process_cpu(me).unwrap();
    assert!(
        after.saturating_sub(before) >= Duration::from_millis(200),
        "{before:?} -> {after:?}"
    );
}

#[test]
fn a_missing_process_is_named() {
    let err = cpu_snapshot(&[("server".to_owned(), 999_999_999)]).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot read the CPU time of server (pid 999999999)"),
        "{err}"
    );
}

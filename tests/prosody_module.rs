//! contrib/prosody/mod_stratus_multicast.lua outside Prosody, with Prosody's own util.stanza
//! (contrib/prosody/test_mod_stratus_multicast.lua): every copy it routes serializes to the same
//! XML as Prosody writes for that stanza, also after the copy changes on the way, and stays a
//! stanza for the rest of Prosody. Its behaviour through a real Prosody is in tests/multicast.rs.

use std::path::Path;
use std::process::Command;

#[test]
fn multicast_module_copies_serialize_as_prosody_does() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // lua5.4 comes with Debian's prosody package, which scripts/xmpp-server.sh installs.
    let out = Command::new("lua5.4")
        .arg(root.join("contrib/prosody/test_mod_stratus_multicast.lua"))
        .arg("/usr/lib/prosody")
        .output()
        .expect("lua5.4 (from the prosody package: scripts/xmpp-server.sh install)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(text.trim(), "ok");
}

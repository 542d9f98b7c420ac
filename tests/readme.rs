//! The README quotes the server configuration the PEP tests use: keep them the same text.

use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
}

fn assert_quoted(readme: &str, lines: &[String], what: &str) {
    assert!(!lines.is_empty(), "no lines taken from {what}");
    for line in lines {
        assert!(
            readme.contains(line.as_str()),
            "README does not quote this line of {what}:\n{line}"
        );
    }
}

#[test]
fn readme_quotes_the_ejabberd_pep_modules() {
    let readme = read("README.md");
    let lines: Vec<String> = read("scripts/templates/ejabberd-pep.yml")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect();
    assert_quoted(&readme, &lines, "scripts/templates/ejabberd-pep.yml");
}

#[test]
fn readme_quotes_the_prosody_pep_settings() {
    let readme = read("README.md");
    let template = read("scripts/templates/prosody.cfg.lua");
    // The settings inside `if pep then ... end` blocks, as an operator writes them.
    let mut lines = Vec::new();
    let mut inside = false;
    for l in template.lines() {
        let t = l.trim();
        if t == "if pep then" {
            inside = true;
            continue;
        }
        if inside && t == "end" {
            inside = false;
            continue;
        }
        if inside && !t.starts_with("table.insert") {
            lines.push(t.to_owned());
        }
    }
    assert!(lines.iter().any(|l| l.contains("privileged_entities")));
    assert_quoted(&readme, &lines, "scripts/templates/prosody.cfg.lua");
}

#[test]
fn readme_quotes_the_ejabberd_multicast_module() {
    let readme = read("README.md");
    let template = read("scripts/templates/ejabberd.yml");
    let lines: Vec<String> = template
        .lines()
        .filter(|l| {
            l.starts_with("  mod_multicast:")
                || l.starts_with("    limits:")
                || l.starts_with("      remote:")
        })
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines.len(),
        3,
        "the template's mod_multicast block changed shape"
    );
    assert_quoted(
        &readme,
        &lines,
        "scripts/templates/ejabberd.yml (mod_multicast)",
    );
}

#[test]
fn readme_loads_the_prosody_multicast_module_as_the_tests_do() {
    let readme = read("README.md");
    let template = read("scripts/templates/prosody.cfg.lua");
    // The module the test template loads exists where the README says, under the name it uses.
    let module = "stratus_multicast";
    assert!(
        template.contains(&format!("table.insert(modules, \"{module}\")")),
        "the test template no longer loads {module}"
    );
    assert!(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("contrib/prosody/mod_{module}.lua"))
            .is_file()
    );
    assert_quoted(
        &readme,
        &[
            "plugin_paths = { \"/path/to/stratus/contrib/prosody\" }".to_owned(),
            format!("    modules_enabled = {{ \"{module}\" }}"),
        ],
        "the Prosody multicast snippet",
    );
}

#[test]
fn readme_builds_and_loads_the_ejabberd_multicast_module_as_the_tests_do() {
    let readme = read("README.md");
    let script = read("scripts/xmpp-server.sh");
    // The module line the test servers get, and the file the script compiles, as the README says.
    let line = "  mod_stratus_multicast: {}";
    assert!(
        script.contains(&format!("\"{line}\"")),
        "scripts/xmpp-server.sh no longer loads the module with {line:?}"
    );
    let source = "contrib/ejabberd/mod_stratus_multicast.erl";
    assert!(script.contains(source), "the script compiles another file");
    assert!(Path::new(env!("CARGO_MANIFEST_DIR")).join(source).is_file());
    assert_quoted(
        &readme,
        &[
            line.to_owned(),
            format!("    erlc -I /usr/lib/erlang/lib/p1_xmpp-*/include {source}"),
        ],
        "the ejabberd multicast module",
    );
}

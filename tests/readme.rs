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

/// The README's example of separate S3 and DynamoDB servers works as written: its `[storage.aws]`
/// block, with only the two endpoints (and the names) pointed at the test servers, sets up the
/// store with `stratus storage init` and keeps an item. scripts/test.sh runs it once with moto for
/// both and once with DynamoDB Local for the table.
#[cfg(feature = "aws")]
#[tokio::test]
async fn readme_separate_endpoints_example_works() {
    use stratus::pubsub::model::{Item, NodeConfig, NodeRecord, ServiceId};
    use stratus::storage::{ItemQuery, Store};

    let Ok(moto) = std::env::var("STRATUS_TEST_AWS_ENDPOINT") else {
        panic!("needs the local S3 + DynamoDB server: run scripts/test.sh");
    };
    let ddb = std::env::var("STRATUS_TEST_DYNAMODB_ENDPOINT").unwrap_or_else(|_| moto.clone());
    let readme = read("README.md");
    let block = readme
        .split("```toml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("dynamodb_endpoint"))
        .expect("README has a toml block with dynamodb_endpoint");
    let name = format!("readme{}", std::process::id());
    let config = block
        .replace("http://127.0.0.1:9000", &moto)
        .replace("http://127.0.0.1:8000", &ddb)
        .replace("\"stratus\"", &format!("\"{name}\""));
    assert!(config.contains(&moto) && config.contains(&ddb), "{config}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stratus.toml");
    std::fs::write(&path, &config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--config")
        .arg(&path)
        .args(["storage", "init"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "storage init: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = stratus::config::Config::from_file(&path).unwrap();
    assert_eq!(cfg.storage.aws.s3_endpoint(), Some(moto.as_str()));
    assert_eq!(cfg.storage.aws.dynamodb_endpoint(), Some(ddb.as_str()));
    let store = stratus::storage::aws::AwsStore::connect(&cfg.storage.aws)
        .await
        .unwrap();
    let svc = ServiceId::Host;
    let owner = stratus::jid::BareJid::parse("owner@localhost").unwrap();
    let record = NodeRecord {
        name: "n".into(),
        config: NodeConfig::host_default(1024),
        created_ms: 1,
        creator: "owner@localhost".into(),
    };
    assert!(store.create_node(&svc, &record, &owner).await.unwrap());
    let item = Item {
        id: "i1".into(),
        publisher: "owner@localhost".into(),
        payload: "<entry xmlns='urn:test'>x</entry>".into(),
        published_ms: 1,
    };
    store.put_item(&svc, "n", &item, None).await.unwrap();
    let page = store.items(&svc, "n", ItemQuery::Newest(1)).await.unwrap();
    assert_eq!(page.items, vec![item]);
}

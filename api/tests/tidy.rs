//! Tidy: the rules ARCHITECTURE.md states as absences, checked on the
//! source tree (as rust-analyzer's `tidy.rs` does), so a change that
//! breaks one fails the build instead of drifting:
//! - `app` never imports a transport (axum, hyper, tower-http, async-nats);
//! - transports run no SQL (no SQL statement in `api/src`);
//! - the HTTP and NATS adapters do not import each other, and NATS builds
//!   no HTTP requests;
//! - every module opens with a `//!` overview;
//! - no test carries the ignore attribute;
//! - request schemas carry the bounds the use cases enforce.

use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Lines of code, with `//` comments cut off, so a comment may name what
/// the code may not use.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split("//").next().unwrap_or("")))
}

#[test]
fn app_never_imports_a_transport() {
    const TRANSPORTS: [&str; 4] = ["axum", "hyper", "tower-http", "async-nats"];
    let manifest = read(&root().join("app/Cargo.toml"));
    for line in manifest.lines() {
        let name = line.split(['=', ' ', '.']).next().unwrap_or("").trim();
        assert!(
            !TRANSPORTS.contains(&name),
            "app/Cargo.toml depends on the transport {name}: use cases never import a transport"
        );
    }
    let mut found = Vec::new();
    for file in rust_files(&root().join("app/src")) {
        let text = read(&file);
        for (n, line) in code_lines(&text) {
            for t in ["axum::", "hyper::", "tower_http::", "async_nats::"] {
                if line.contains(t) {
                    found.push(format!("{}:{n}: {t}", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "app imports a transport:\n{}",
        found.join("\n")
    );
}

#[test]
fn transports_run_no_sql() {
    const SQL: [&str; 7] = [
        "SELECT ",
        "INSERT INTO",
        "UPDATE ",
        "DELETE FROM",
        "CREATE TABLE",
        "ON CONFLICT",
        "fetch_optional(",
    ];
    let mut found = Vec::new();
    for file in rust_files(&root().join("api/src")) {
        let text = read(&file);
        for (n, line) in code_lines(&text) {
            for s in SQL {
                if line.contains(&format!("\"{s}")) || (s.ends_with('(') && line.contains(s)) {
                    found.push(format!("{}:{n}: {}", file.display(), line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL in api/src (it belongs in store, projections or migrations):\n{}",
        found.join("\n")
    );
}

#[test]
fn http_and_nats_do_not_import_each_other() {
    let mut found = Vec::new();
    for (dir, other) in [
        ("api/src/http", "crate::nats"),
        ("api/src/nats", "crate::http"),
    ] {
        for file in rust_files(&root().join(dir)) {
            let text = read(&file);
            for (n, line) in code_lines(&text) {
                if line.contains(other) {
                    found.push(format!("{}:{n}: {}", file.display(), line.trim()));
                }
                if dir.ends_with("nats") && line.contains("format!(\"/v1") {
                    found.push(format!("{}:{n}: builds an HTTP path", file.display()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "a transport reaches into another:\n{}",
        found.join("\n")
    );
}

/// The OpenAPI builder imports every handler to gather their paths; a
/// handler importing the builder back would close a circle. Handlers name
/// their response schemas through `http::schemas`.
#[test]
fn handlers_do_not_import_the_openapi_builder() {
    let mut found = Vec::new();
    for file in rust_files(&root().join("api/src/http")) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "openapi.rs" || name == "mod.rs" {
            continue;
        }
        let text = read(&file);
        for (n, line) in code_lines(&text) {
            if line.contains("super::openapi") || line.contains("http::openapi") {
                found.push(format!("{}:{n}: {}", file.display(), line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "handlers importing the OpenAPI builder (an import circle):\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_opens_with_an_overview() {
    let mut missing = Vec::new();
    for krate in ["app/src", "api/src"] {
        for file in rust_files(&root().join(krate)) {
            let text = read(&file);
            if !text.trim_start().starts_with("//!") {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules without a //! overview:\n{}",
        missing.join("\n")
    );
}

#[test]
fn no_test_is_ignored() {
    let mut found = Vec::new();
    for krate in [
        "events",
        "ledger",
        "store",
        "projections",
        "app",
        "api",
        "replay-tools",
        "bench",
    ] {
        let dir = root().join(krate);
        for sub in ["src", "tests"] {
            let d = dir.join(sub);
            if !d.exists() {
                continue;
            }
            for file in rust_files(&d) {
                let text = read(&file);
                for (n, line) in code_lines(&text) {
                    if line.contains(&["#[", "ignore"].concat()) {
                        found.push(format!("{}:{n}", file.display()));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "ignored tests:\n{}", found.join("\n"));
}

#[test]
fn request_schemas_carry_the_bounds_the_server_enforces() {
    let doc = serde_json::to_value(api::http::openapi::document()).expect("the document");
    let schemas = &doc["components"]["schemas"];
    let deduct = &schemas["DeductRequest"]["properties"];
    assert_eq!(deduct["units"]["minimum"], 1, "{deduct}");
    assert_eq!(deduct["units"]["maximum"], 1_000_000_000_u64, "{deduct}");
    assert_eq!(deduct["metadata"]["maxProperties"], 64, "{deduct}");
    assert_eq!(deduct["model"]["maxLength"], 1024, "{deduct}");
    assert!(deduct["operation"]["pattern"].is_string(), "{deduct}");
    let hold = &schemas["HoldRequest"]["properties"];
    assert_eq!(hold["ttl_seconds"]["maximum"], 604_800, "{hold}");
    let open = &schemas["OpenRequest"]["properties"];
    assert_eq!(open["slug"]["maxLength"], 64, "{open}");
    assert!(open["slug"]["pattern"].is_string(), "{open}");
    let grant = &schemas["GrantRequest"]["properties"];
    assert_eq!(
        grant["credits"]["maximum"], 1_000_000_000_000_i64,
        "{grant}"
    );
    // Billing: the methods a customer may name, references, reasons and
    // the payment method rows' bounds.
    let methods = &schemas["CustomerPaymentMethod"]["enum"];
    assert_eq!(
        methods,
        &serde_json::json!(["bank_transfer", "local_wallet", "stripe", "paypal"]),
        "{methods}"
    );
    let manual = &schemas["ManualPaymentRequest"]["properties"];
    assert_eq!(manual["reference"]["maxLength"], 255, "{manual}");
    assert_eq!(manual["invoice_id"]["format"], "uuid", "{manual}");
    assert!(manual["amount"]["pattern"].is_string(), "{manual}");
    let purchase = &schemas["PurchaseRequest"]["properties"];
    assert!(purchase["package"]["pattern"].is_string(), "{purchase}");
    let refund = &schemas["PaymentRefundRequest"]["properties"];
    assert_eq!(refund["reason"]["maxLength"], 1024, "{refund}");
    assert_eq!(refund["reason"]["minLength"], 1, "{refund}");
    assert_eq!(
        schemas["RefundRequest"]["properties"]["credits"]["maximum"], 1_000_000_000_000_i64,
        "the refund of a deduction keeps its own schema"
    );
    let config = &schemas["ConfigRequest"]["properties"];
    assert_eq!(config["display_name"]["maxLength"], 64, "{config}");
    assert_eq!(config["sort_order"]["maximum"], 10_000, "{config}");
    assert!(config["swift"]["pattern"].is_string(), "{config}");
    assert_eq!(
        schemas["RunPeriodsRequest"]["properties"]["now"]["format"],
        "date-time"
    );
}

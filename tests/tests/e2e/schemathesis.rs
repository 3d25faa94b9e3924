//! Both OpenAPI documents, against the running services, by schemathesis
//! (property-based: it generates valid and invalid requests from the
//! schema, with and without the token): no response may be a 5xx or
//! disagree with the document.  Bounded: a fixed seed and a few dozen
//! examples per operation.
//!
//! Needs `schemathesis` on the PATH (`pip install schemathesis`; `.ci/run`
//! installs it).  The check that generated *valid* data is accepted is left
//! out on purpose: the schema cannot express every rule (name syntax, record
//! sizes, generations), so some schema-valid requests are rightly refused
//! with a 400 naming the rule.

use crate::common::*;
use std::process::Command;

fn schemathesis(
    document: &str,
    url: &str,
    token: &str,
    workdir: &std::path::Path,
) -> (bool, String) {
    let document =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi").join(document);
    let output = Command::new("schemathesis")
        .current_dir(workdir)
        .args(["run"])
        .arg(&document)
        .args(["--url", url])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "25", "--seed", "20261125", "--no-color"])
        .output()
        .unwrap_or_else(|e| {
            panic!("could not run schemathesis ({e}): install it with `pip install schemathesis`")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_hold_to_their_documents_under_generated_requests() {
    // Servers in both groups, so that Nexus is ready: `GET /ready` answers
    // 503 by design when it is not, which would count as a server error.
    let ts = TestStack::start(1, 1, 1).await;
    let token = std::fs::read_to_string(&ts.stack.api_token_file).unwrap();
    let token = token.trim();
    let server = format!("http://{}", ts.internal_servers()[0].http_address);
    let nexus = ts.stack.nexus[0].url();
    for (document, url) in [("dns-server.json", &server), ("nexus-internal.json", &nexus)] {
        let (ok, report) = schemathesis(document, url, token, ts.dir.path());
        assert!(ok, "schemathesis found failures against {document} at {url}:\n{report}");
        assert!(report.contains("generated"), "no test cases ran:\n{report}");
    }
    // The services are still up and answering.
    assert!(ts.stack.server_generation(ts.internal_servers()[0]).await.is_ok());
    ts.nexus(0).status_get().send().await.unwrap();
}

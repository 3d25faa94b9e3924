//! The checked-in OpenAPI document must match the API trait.  After changing
//! the API, regenerate it with
//! `EXPECTORATE=overwrite cargo test -p nexus-api --test openapi`.

#[test]
fn openapi_document_is_up_to_date() {
    let document = serde_json::to_string_pretty(&nexus_api::openapi_document()).unwrap();
    expectorate::assert_contents("../openapi/nexus-internal.json", &format!("{document}\n"));
}

//! SecureKeyManager over the in-memory repository and an AES-GCM test provider: the provider and repository conformance suites over the test provider and the in-memory
//! repository.

use llm_accounting_core::MemoryKeyRepository;

mod common;

use common::TestProvider;

#[test]
fn repository_conformance_in_memory() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(llm_accounting_core::conformance::repository::run(
        &MemoryKeyRepository::new(),
    ));
}

#[tokio::test]
async fn test_provider_conformance() {
    llm_accounting_core::conformance::provider::run(TestProvider::new("test", 1).as_ref()).await;
}

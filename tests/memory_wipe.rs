//! Decrypted keys are wiped before their memory is freed: on cache eviction, invalidation
//! (rotate), `clear_cache()` and when the last caller's copy is dropped; and cached keys are
//! locked in RAM (Linux: seen in `/proc/self/status`).
//!
//! A global allocator wrapper looks at every block as it is freed and counts the blocks that
//! still hold the canary key. A positive control (a plain `String` holding the canary, dropped
//! without wiping) proves the detector sees what it should.

// The allocator wrapper must implement the unsafe `GlobalAlloc` trait; it only forwards to the
// system allocator and reads the block being freed.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use llm_accounting::{
    ApiKey, CacheOptions, KeyIdentity, LocalKmsProvider, ManagerOptions, MemoryKeyRepository,
    SecureKeyManager,
};

const CANARY: &[u8] = b"sk-test-FAKE-CANARY-7c1e9b04d2a6";

static ARMED: AtomicBool = AtomicBool::new(false);
static UNWIPED: AtomicUsize = AtomicUsize::new(0);

struct Watch;

// SAFETY: every call is forwarded unchanged to the system allocator; `dealloc` additionally
// reads the `layout.size()` bytes of the block it is given, which the caller guarantees are
// allocated and still owned by it.
unsafe impl GlobalAlloc for Watch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.load(Ordering::Relaxed) && layout.size() >= CANARY.len() {
            // SAFETY: `ptr` points to a live block of `layout.size()` bytes (GlobalAlloc's
            // contract for dealloc).
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            if block.windows(CANARY.len()).any(|w| w == CANARY) {
                UNWIPED.fetch_add(1, Ordering::Relaxed);
            }
        }
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Watch = Watch;

fn canary_key() -> ApiKey {
    ApiKey::new(String::from_utf8(CANARY.to_vec()).expect("ascii"))
}

#[test]
fn decrypted_keys_are_wiped_before_their_memory_is_freed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let provider = Arc::new(LocalKmsProvider::open_or_create(dir.path().join("mk")).expect("mk"));
    let manager = SecureKeyManager::builder(provider, Arc::new(MemoryKeyRepository::new()))
        .options(ManagerOptions {
            cache: CacheOptions {
                max_entries: 1,
                refresh_interval: std::time::Duration::ZERO,
                ..CacheOptions::default()
            },
            ..ManagerOptions::default()
        })
        .build();
    let a = KeyIdentity::from_parts("openai", Some("alice"), None).expect("id");
    let b = KeyIdentity::from_parts("openai", Some("bob"), None).expect("id");

    ARMED.store(true, Ordering::SeqCst);
    rt.block_on(async {
        manager.store(&a, &canary_key()).await.expect("store");
        // Cached, then the caller's copy dropped: the cache still holds it.
        drop(manager.get(&a).await.expect("get"));
        assert_eq!(manager.cached_keys(), 1);
        // The cached key's pages are locked in RAM (best effort; allowed here).
        #[cfg(target_os = "linux")]
        {
            let status = std::fs::read_to_string("/proc/self/status").expect("status");
            let locked_kb: u64 = status
                .lines()
                .find_map(|l| l.strip_prefix("VmLck:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .expect("VmLck");
            assert!(locked_kb > 0, "no page locked in RAM: {status}");
        }
        // Evicted by the size bound (one entry) when another key is loaded.
        manager
            .store(&b, &ApiKey::new("sk-test-FAKE-other-000000000".into()))
            .await
            .expect("store");
        drop(manager.get(&b).await.expect("get"));
        // Loaded again, then invalidated by a rotation.
        drop(manager.get(&a).await.expect("get"));
        manager
            .rotate(&a, &ApiKey::new("sk-test-FAKE-rotated-0000000".into()))
            .await
            .expect("rotate");
        // Loaded again (previous version), then cleared.
        drop(manager.get_previous(&a).await.expect("previous"));
        manager.store(&b, &canary_key()).await.expect("store");
        drop(manager.get(&b).await.expect("get"));
        manager.clear_cache();
        manager.shutdown().await.expect("shutdown");
    });
    let unwiped = UNWIPED.load(Ordering::SeqCst);

    // Positive control: an ordinary String holding the canary is seen when freed.
    drop(String::from_utf8(CANARY.to_vec()).expect("ascii"));
    let control = UNWIPED.load(Ordering::SeqCst) - unwiped;
    ARMED.store(false, Ordering::SeqCst);

    assert_eq!(control, 1, "the detector sees an unwiped block");
    assert_eq!(
        unwiped, 0,
        "a block still holding a decrypted key was freed without being wiped"
    );
}

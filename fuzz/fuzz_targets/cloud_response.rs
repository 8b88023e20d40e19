#![no_main]
//! What cairn itself parses from GCS and Azure answers: GCS listing pages,
//! error bodies and `Content-Range`; Azure (and S3) XML error codes and
//! messages. Azure and S3 listings are parsed inside `object_store`.
use cairn::backends::fuzzing::{azure_error, gcs_content_range, gcs_error_detail, gcs_list_page};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gcs_list_page(data, "");
    let _ = gcs_list_page(data, "prefix/");
    let text = String::from_utf8_lossy(data);
    assert!(gcs_error_detail(&text).len() <= 310);
    if let Some((r, _)) = gcs_content_range(&text) {
        assert!(r.start < r.end);
    }
    let status = if data.len() >= 2 {
        u16::from_le_bytes([data[0], data[1]])
    } else {
        500
    };
    let (code, _message) = azure_error(status, data.get(2..10), &text);
    let _ = code;
});

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| afterimage_fuzz::gemini_response(data));

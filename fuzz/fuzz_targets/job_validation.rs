#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tf::fuzzing::job_validation(data));

//! Fuzzes the message reader: any bytes must give a message or a reason, never a panic, a
//! hang or unbounded memory; whatever is read must write and read back to the same value;
//! and what passes the check, the serde reader must read alike.
#![no_main]

use amtsbote::xamtshilfe::{Checker, ReaderConfig, read};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = ReaderConfig::default();
    // On what validation refuses the readers may differ (whitespace-only text reads as ""
    // here, as the spaces through serde); on accepted messages they must agree.
    if let Ok(message) = Checker::with_defaults().check(data) {
        assert_eq!(read::parse_with_serde(data, &config).as_ref(), Ok(&message));
        let written = message.to_xml("xAmtshilfe110").expect("a read message can be written");
        let again = read::parse(written.as_bytes(), &config).expect("what we write, we read");
        assert_eq!(again, message);
    }
});

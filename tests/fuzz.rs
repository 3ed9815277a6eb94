//! A bounded fuzz run of the reader and validator: the example messages, mutated 20,000 times
//! from a fixed seed (bit flips, control characters and character references put in,
//! truncation, duplicated elements, long runs, combining marks), must each give a message or
//! a reasoned rejection — never a panic, never a flood of reasons, never a debtor's name in a
//! reason — and whatever the single-pass reader accepts, the serde reader reads alike.

use std::panic::{AssertUnwindSafe, catch_unwind};

use amtsbote::xamtshilfe::{Checker, ReaderConfig, Rejection, read};

/// xorshift64*: small, fast, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const INSERTS: &[&[u8]] = &[
    b"\x00", b"\x01", b"\x08", b"\x0B", b"\x0C", b"\x1F", "\u{FFFE}".as_bytes(), "\u{FFFF}".as_bytes(), b"&#x1;", b"&#0;",
    b"&#xFFFE;", b"&#x110000;", b"&#xD800;", b"&#x202E;", "\u{202E}".as_bytes(), "\u{200B}".as_bytes(), "\u{0308}".as_bytes(),
    b"&#x308;", b"&xxe;", b"<!DOCTYPE x>", b"<?xml version=\"1.0\"?>", b" ", b"<", b"&", b"]]>", b"<![CDATA[x]]>", b"\xC3",
    b"\xFF", "\u{1F600}".as_bytes(), b"\r", b"\t",
];

const RUNS: &[&[u8]] = &[b"a", b"\xC3\xA4", b"<a>", b"</a>", b"&amp;", b" ", b"<a/>", b"x=\"1\" "];

/// One mutation of `doc`.
fn mutate(rng: &mut Rng, doc: &[u8]) -> Vec<u8> {
    let mut out = doc.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let len = out.len().max(1);
        let at = rng.below(len).min(out.len());
        match rng.below(8) {
            // Bit flip.
            0 => {
                if let Some(b) = out.get_mut(at) {
                    *b ^= 1 << rng.below(8);
                }
            }
            // A control character, a reference, a mark, a bit of markup.
            1 | 2 => {
                let ins = *rng.pick(INSERTS);
                out.splice(at..at, ins.iter().copied());
            }
            // Truncation.
            3 => out.truncate(at),
            // An element duplicated in place.
            4 => {
                let text = String::from_utf8_lossy(&out).into_owned();
                let starts: Vec<usize> = text.match_indices('<').map(|(i, _)| i).filter(|&i| text[i + 1..].starts_with(|c: char| c.is_ascii_alphabetic())).collect();
                if starts.is_empty() {
                    continue;
                }
                let start = *rng.pick(&starts);
                let name: String = text[start + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == ':').collect();
                if let Some(end) = text[start..].find(&format!("</{name}>")).map(|e| start + e + name.len() + 3) {
                    let copies = if rng.below(16) == 0 { 1 + rng.below(300) } else { 1 };
                    let block = text[start..end].repeat(copies);
                    let mut t = text;
                    t.insert_str(end, &block);
                    out = t.into_bytes();
                }
            }
            // A long run of one thing.
            5 => {
                let run = *rng.pick(RUNS);
                let most = if rng.below(8) == 0 { 3000 } else { 100 };
                let n = 1 + rng.below(most);
                out.splice(at..at, run.iter().copied().cycle().take(run.len() * n));
            }
            // A byte deleted.
            6 => {
                if at < out.len() {
                    out.remove(at);
                }
            }
            // A random byte.
            _ => {
                if let Some(b) = out.get_mut(at) {
                    *b = rng.next() as u8;
                }
            }
        }
    }
    out
}

fn examples() -> Vec<(String, Vec<u8>)> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/messages");
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "xml")).collect();
    files.sort();
    files.into_iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn mutated_examples_get_a_message_or_a_reasoned_rejection() {
    let checker = Checker::with_defaults();
    let config = ReaderConfig::default();
    let examples = examples();
    assert!(examples.len() >= 10);
    let mut rng = Rng(0x0000_A375_B07E_2026_u64);
    let (mut accepted, mut unreadable, mut invalid) = (0, 0, 0);
    for i in 0..20_000 {
        let (name, doc) = rng.pick(&examples);
        let input = mutate(&mut rng, doc);
        let outcome = catch_unwind(AssertUnwindSafe(|| checker.check(&input)));
        let Ok(outcome) = outcome else {
            panic!("case {i} ({name}): the checker panicked on {:?}", String::from_utf8_lossy(&input));
        };
        match &outcome {
            Ok(_) => accepted += 1,
            Err(rejection) => {
                match rejection {
                    Rejection::Unreadable(_) => unreadable += 1,
                    Rejection::Invalid(_) => invalid += 1,
                }
                let reasons = rejection.reasons();
                assert!(!reasons.is_empty() && reasons.len() <= 101, "case {i} ({name}): {} reasons", reasons.len());
                for r in &reasons {
                    assert!(!r.trim().is_empty() && r.len() < 2_000, "case {i} ({name}): reason {r:?}");
                    // The debtors of the examples never appear in a reason.
                    assert!(!r.contains("Mustermann") && !r.contains("Erika"), "case {i} ({name}): reason {r:?}");
                }
            }
        }
        let serde = catch_unwind(AssertUnwindSafe(|| read::parse_with_serde(&input, &config)));
        let Ok(serde) = serde else {
            panic!("case {i} ({name}): the serde reader panicked on {:?}", String::from_utf8_lossy(&input));
        };
        // What passes the check, the serde reader reads to the same value. The single-pass
        // reader is the stricter (order, lengths, DIN 91379), trims texts and reads them in NFC;
        // so the serde reader's value is compared after writing it and reading it back.
        if let Ok(m) = outcome {
            let Ok(other) = serde else { panic!("case {i} ({name}): accepted, but the serde reader says {serde:?}") };
            let written = other.to_xml("xAmtshilfe110").unwrap();
            assert_eq!(read::parse(written.as_bytes(), &config), Ok(m), "case {i} ({name}): {:?}", String::from_utf8_lossy(&input));
        }
    }
    // The run exercised every outcome.
    assert!(accepted > 100 && unreadable > 1_000 && invalid > 100, "accepted {accepted}, unreadable {unreadable}, invalid {invalid}");
}

//! The print step: requests whose recipient takes no electronic delivery, printed as letters
//! for the print centre's nightly batch.
//! - [`letter`]: one request as a DIN 5008 letter; many letters into one PDF file.
//! - [`attachment`]: the request's attached PDFs, checked and imported into the letter's file.
//! - [`font`]: the embedded letter font (DejaVu Sans) and text measuring.
//! - [`marks`]: the inserter's marks on every sheet (OMR code, DataMatrix).
//! - [`pdf`]: the print file's PDF, written object by object as its letters are laid out.
//! - [`batch`]: the nightly batch — one per date, decided in the ledger; letters sorted by
//!   postcode into PDF files with their manifests, handed off, moved to printed.
//! - [`feedback`]: the print centre's feedback file — letters handed over to the post
//!   (posted) or back with an error (printed again in the next batch), all or nothing.

pub mod attachment;
pub mod batch;
pub mod feedback;
pub mod font;
pub mod letter;
pub mod marks;
pub mod pdf;

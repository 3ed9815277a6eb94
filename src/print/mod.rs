//! The print step: requests whose recipient takes no electronic delivery, printed as letters
//! for the print centre's nightly batch.
//! - [`letter`]: one request as a DIN 5008 letter; many letters into one PDF file.
//! - [`font`]: the embedded letter font (DejaVu Sans) and text measuring.

pub mod font;
pub mod letter;

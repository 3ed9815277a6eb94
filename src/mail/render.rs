//! STUB (lead's local compile aid; replaced by the render branch)
use std::path::Path;
use chrono::{DateTime, Utc};
use super::MailContent;
pub struct Templates;
pub struct Rendered { pub subject: String, pub text: String, pub html: String }
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);
impl Templates {
    pub fn load(_d: &Path) -> Result<Templates, TemplateError> { Ok(Templates) }
    pub fn render(&self, c: &MailContent) -> Result<Rendered, TemplateError> {
        Ok(Rendered { subject: format!("{:?}", c.items[0].event), text: format!("{:#?}", c), html: "<p>x</p>".into() })
    }
}
pub fn build_message(r: &Rendered, from: &str, to: &[String], message_id: &str, date: DateTime<Utc>) -> Result<lettre::Message, TemplateError> {
    let mut b = lettre::Message::builder().from(from.parse().map_err(|e| TemplateError(format!("{e}")))?).subject(r.subject.clone()).message_id(Some(format!("<{message_id}>"))).date(date.into());
    for t in to { b = b.to(t.parse().map_err(|e| TemplateError(format!("{e}")))?); }
    b.body(r.text.clone()).map_err(|e| TemplateError(e.to_string()))
}

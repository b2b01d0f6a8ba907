pub struct DbOptions {
    pub json: bool,
    pub bucket: Option<String>,
    pub key_prefix: Option<Vec<u8>>,
    pub show_secrets: bool,
    pub pages: bool,
}
pub fn dump(_p: &std::path::Path, _o: &DbOptions) -> anyhow::Result<crate::output::Verdict> {
    anyhow::bail!("db dump: pending")
}

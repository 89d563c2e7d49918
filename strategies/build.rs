// `sqlx::migrate!` embeds the migration folders when the crate compiles; a new migration file
// changes no Rust source, so without this cargo would keep a build that lacks it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

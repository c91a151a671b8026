// `sqlx::migrate!` embeds ../../migrations at compile time; without this, adding a
// migration file alone would not rebuild the crate and the new migration would be
// missing from the binary (sqlx's documented build script). The path must exist:
// a missing one makes Cargo rerun the script, and rebuild the crate and everything
// above it, on every invocation.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}

// The engine's migrations are compiled in (`sqlx::migrate!`): rebuild when one changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}

import ArgumentParser
struct Quickstart: ParsableCommand {
    func run() throws { throw ValidationError("Quickstart is being built") }
}
struct KNN: ParsableCommand {
    func run() throws { throw ValidationError("KNN is being built") }
}
struct Linear: ParsableCommand {
    func run() throws { throw ValidationError("Linear is being built") }
}
struct Attention: ParsableCommand {
    func run() throws { throw ValidationError("Attention is being built") }
}

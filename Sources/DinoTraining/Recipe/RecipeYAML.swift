import DinoKernels
import Dispatch
import Foundation
import Yams

/// Reading a recipe's YAML safely: a recipe is a file from anywhere, and Yams traps on some inputs.
extension Recipe {
    /// The largest recipe read, in bytes.
    static let maximumYAMLBytes = 256 * 1024

    /// Parses YAML into plain values on a thread with a 512 MiB stack: Yams's parser and constructor
    /// recurse once per nesting level, and `- - - - ...` nests a level every two bytes, so the 256 KiB a
    /// recipe may have could overflow an ordinary stack.
    static func parseYAML(_ text: String, source: String) throws -> Any? {
        guard text.utf8.count <= maximumYAMLBytes else {
            throw DinoError("\(source) is larger than \(maximumYAMLBytes / 1024) KiB: not a recipe")
        }
        nonisolated(unsafe) var result: Result<Any?, Error> = .success(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            result = Result { try parseYAMLOnThisThread(text, source: source) }
            done.signal()
        }
        thread.stackSize = 512 << 20
        thread.start()
        done.wait()
        return try result.get()
    }

    /// The document as plain values, built only from what a recipe holds: a mapping of names to scalars
    /// or flat lists of scalars (or, for `--set`, one such value). Anything nested deeper is refused
    /// here, so that neither Yams's `load` (which traps on a key that is not a scalar) nor a deep tree's
    /// recursive release runs on the caller's stack.
    static func parseYAMLOnThisThread(_ text: String, source: String) throws -> Any? {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw DinoError("\(source) is not valid YAML: \(String(describing: error).split(whereSeparator: \.isNewline).joined(separator: " "))")
        }
        guard let node else { return nil }
        let tooDeep = DinoError("\(source): a recipe holds key: value lines whose values are numbers, strings or flat lists")
        func flat(_ node: Node) throws -> Any {
            switch node {
            case .scalar(let scalar): return plainValue(scalar)
            case .sequence(let items):
                return try items.map { item -> Any in
                    guard case .scalar(let scalar) = item else { throw tooDeep }
                    return plainValue(scalar)
                }
            case .mapping: throw tooDeep
            }
        }
        guard case .mapping(let pairs) = node else { return try flat(node) }
        var mapping: [String: Any] = [:]
        for pair in pairs {
            guard case .scalar(let key) = pair.key else { throw DinoError("\(source): every key must be a plain name (key: value)") }
            // PyYAML keeps the last of two equal keys without a word; a recipe edited by hand that sets
            // lr twice more likely holds a mistake than an intent.
            guard mapping[key.string] == nil else {
                let line = key.mark.map { " (again on line \($0.line))" } ?? ""
                throw DinoError("\(source): key '\(key.string)' is set twice\(line); keep one")
            }
            mapping[key.string] = try flat(pair.value)
        }
        return mapping
    }

    /// A scalar's value: quoted text stays text; otherwise YAML 1.1's booleans and nulls, decimal
    /// integers, floats (with `.inf` and `.nan`), or text. (Yams's constructor is not used: it traps on
    /// sexagesimal integers that overflow, such as `8888888888000000000:0`.)
    static func plainValue(_ scalar: Node.Scalar) -> Any {
        let text = scalar.string
        if scalar.style == .singleQuoted || scalar.style == .doubleQuoted { return text }
        switch text.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        case "", "~", "null": return NSNull()
        case ".inf", "+.inf": return Double.infinity
        case "-.inf": return -Double.infinity
        case ".nan": return Double.nan
        default:
            if let integer = Int(text) { return integer }
            if let double = Double(text) { return double }
            return text
        }
    }
}

/// The one error type the library throws: a sentence saying what went wrong, where, and what to do.
public struct DinoError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

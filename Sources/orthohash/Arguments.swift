// Argument types: enums by their raw values, lists parsed with a message that says what is wrong.

import ArgumentParser
import Foundation
import OrthoHashNumerics
import OrthoHashTraining

extension BackboneKind: ExpressibleByArgument {}
extension HeadPath: ExpressibleByArgument {}
extension TrainTransform: ExpressibleByArgument {}
extension HeadProducts: ExpressibleByArgument {}
extension GradientOverlap: ExpressibleByArgument {}
extension GradientPrecision: ExpressibleByArgument {}
extension MarginType: ExpressibleByArgument {}
extension MultiLabelLoss: ExpressibleByArgument {}
extension QuantizationType: ExpressibleByArgument {}
extension CodebookMethod: ExpressibleByArgument {}
extension OptimizerKind: ExpressibleByArgument {}
extension SchedulerKind: ExpressibleByArgument {}
extension DatasetKind: ExpressibleByArgument {}

extension CheckpointChoice: ExpressibleByArgument {
    public init?(argument: String) {
        guard !argument.isEmpty else { return nil }
        self.init(argument)
    }
}

/// The values of `--flag a,b,c`, each parsed by `item`; an empty item is an error ("1024,,5").
func commaList<T>(_ text: String, flag: String, what: String, _ item: (String) -> T?) throws -> [T] {
    let parts = text.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    if text.trimmingCharacters(in: .whitespaces).isEmpty { return [] }
    return try parts.map { part in
        guard let value = item(part) else { throw ValidationError("\(flag) takes \(what), got '\(part)' in '\(text)'") }
        return value
    }
}

enum Parse {
    /// `1024,1024`: positive integers.
    static func positiveIntegers(_ flag: String) -> @Sendable (String) throws -> [Int] {
        { text in try commaList(text, flag: flag, what: "comma-separated positive integers") { Int($0).flatMap { $0 >= 1 ? $0 : nil } } }
    }

    /// `all,1000,gt100`.
    static let cutoffs: @Sendable (String) throws -> [MapCutoff] = { text in
        try commaList(text, flag: "--map-at", what: "'all' or positive numbers, optionally behind 'gt' (gt100)") { MapCutoff($0) }
    }

    /// `0.9,0.999`.
    static let betas: @Sendable (String) throws -> Betas = { text in
        let b = try commaList(text, flag: "--betas", what: "two numbers, e.g. 0.9,0.999") { Float($0) }
        guard b.count == 2 else { throw ValidationError("--betas takes two numbers, e.g. 0.9,0.999, got '\(text)'") }
        return Betas(beta1: b[0], beta2: b[1])
    }

    /// `link=10gbit`: a CSV column's name and value (letters, digits, `_`, `-`, `.` in the name).
    static let label: @Sendable (String) throws -> Label = { text in
        guard let eq = text.firstIndex(of: "="), eq != text.startIndex,
              text[..<eq].allSatisfy({ $0.isLetter || $0.isNumber || "_-.".contains($0) }) else {
            throw ValidationError("--label takes KEY=VALUE (a column name of letters, digits, _ - or ., then =), got '\(text)'")
        }
        let value = String(text[text.index(after: eq)...])
        guard !value.contains("\n") && !value.contains("\r") else { throw ValidationError("--label's value must be one line, got '\(text)'") }
        return Label(key: String(text[..<eq]), value: value)
    }
}

/// Adam's two betas.
struct Betas: Sendable { var beta1: Float, beta2: Float }

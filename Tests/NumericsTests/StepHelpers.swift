// What the tests need of a model and a store that training does not: a step without the
// trainer, and a store's gradients cleared by hand.

@testable import OrthoHashNumerics

extension HashModel {
    /// Forward (BatchNorm in training mode) then backward for one local batch of `batchSize`
    /// rows, as the trainer runs them: the gradients are added into the store's. Returns this
    /// rank's share of the loss, its count of correct rows, and the backward pass's finiteness report.
    @discardableResult
    func trainStep(_ x: UnsafePointer<Float>, targets: BatchTargets,
                   randomness: StepRandomness? = nil) -> (loss: Double, correct: Int, gradients: GradientReport) {
        let (loss, correct) = forward(x, targets: targets, randomness: randomness)
        return (loss, correct, backward(x))
    }
}

extension ParameterStore {
    /// Every gradient zero, and the store told so (the tests write into the gradients directly,
    /// behind the store's back).
    func clearGradients() {
        clearGradients(outside: 0..<0)
        gradients.zero()
    }
}

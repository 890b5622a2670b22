// swift-tools-version:5.9
// The kepu phone library for iOS as a Swift package: the Rust library as an XCFramework
// (a binary target) and its generated Swift. build-xcframework.sh writes both (on macOS
// with Xcode); neither is committed.
import PackageDescription

let package = Package(
    name: "KepuMobile",
    platforms: [.iOS(.v15), .macOS(.v12)],
    products: [
        .library(name: "KepuMobile", targets: ["KepuMobile"]),
    ],
    targets: [
        .binaryTarget(name: "KepuMobileFFI", path: "KepuMobileFFI.xcframework"),
        .target(
            name: "KepuMobile",
            dependencies: ["KepuMobileFFI"],
            path: "Sources/KepuMobile"
        ),
    ]
)

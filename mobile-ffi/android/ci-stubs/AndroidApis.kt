// Compile-only stand-ins for the three Android APIs the Android flavour of the generated
// Kotlin names (android.os.Build, android.system.SystemCleaner, androidx RequiresApi), so
// that CI, which has no Android SDK, can compile exactly the Kotlin the module ships
// against JNA (mobile-ffi/tests/run-bindings-tests.sh). Never packed into anything.
@file:Suppress("unused")

package android.os

object Build {
    object VERSION {
        val SDK_INT: Int = 0
    }

    object VERSION_CODES {
        const val UPSIDE_DOWN_CAKE: Int = 34
    }
}

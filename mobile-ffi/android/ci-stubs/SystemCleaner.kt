// Compile-only stand-in (see AndroidApis.kt).
package android.system

object SystemCleaner {
    fun cleaner(): java.lang.ref.Cleaner = java.lang.ref.Cleaner.create()
}

// Compile-only stand-in (see AndroidApis.kt).
package androidx.annotation

annotation class RequiresApi(val value: Int)

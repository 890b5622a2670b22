// The kepu phone library as an Android library (AAR): the Rust library for three ABIs
// under src/main/jniLibs and its generated Kotlin under src/main/kotlin, both written by
// build-android.sh (neither is committed). Build: ./build-android.sh && gradle assembleRelease
plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.1.0"
}

android {
    namespace = "org.kepu.mobile"
    compileSdk = 35
    // NDK r27 or later: 16 KB page-aligned libraries (see build-android.sh).
    ndkVersion = "27.2.12479018"

    defaultConfig {
        minSdk = 24
        consumerProguardFiles("consumer-rules.pro")
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    packaging {
        jniLibs {
            // Stored uncompressed and 16 KB-aligned in the APK (AGP 8.5.1+), so the
            // system maps the library straight from the APK on 16 KB-page devices.
            useLegacyPackaging = false
        }
    }
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    // JNA as an AAR: it carries libjnidispatch.so for every Android ABI.
    implementation("net.java.dev.jna:jna:5.13.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.8.0")
    implementation("androidx.annotation:annotation:1.9.1")
}

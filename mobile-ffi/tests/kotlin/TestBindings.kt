// Kotlin (JVM) tests of the generated bindings: async syncNow and its cancellation by a
// coroutine, observers on their own thread and the Flow wrapper of docs/mobile.md, typed
// errors and enums, sign-out; against the in-process test server (KEPU_TEST_SERVER) and
// a real kepu-server (KEPU_SERVER) seeded with its admin CLI.
// Run by mobile-ffi/tests/run-bindings-tests.sh; prints "N passed, M failed".

import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.nio.file.Files
import java.net.ServerSocket
import java.net.SocketTimeoutException
import java.net.URL
import java.util.Collections
import java.util.concurrent.TimeUnit
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.async
import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow
import kotlinx.coroutines.flow.conflate
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withTimeout
import kotlinx.coroutines.withTimeoutOrNull
import org.kepu.mobile.ApiException
import org.kepu.mobile.BookingStatus
import org.kepu.mobile.DocumentKind
import org.kepu.mobile.DocumentObserver
import org.kepu.mobile.KepuClient
import org.kepu.mobile.Role
import org.kepu.mobile.SyncObserver
import org.kepu.mobile.SyncStatus

// The wrapper docs/mobile.md gives apps: the sync status as a Flow (the current status
// first, then each change; a slow collector sees the latest).
fun KepuClient.syncStatusFlow(): Flow<SyncStatus> = callbackFlow {
    val handle = observeSync(object : SyncObserver {
        override fun onSyncStatus(status: SyncStatus) {
            trySend(status)
        }
    })
    awaitClose { handle.cancel() }
}.conflate()

/// A real kepu-server on a free port with a fresh data dir, seeded with its admin CLI:
/// one school with pupils and teachers, one venue with a staff (gate) user.
class RealServer {
    private val binary: String = System.getenv("KEPU_SERVER")
    private val dataDir: File = Files.createTempDirectory("kepu-kt-server-").toFile()
    private val proc: Process
    val url: String
    val venue: String
    val pupils: List<String>
    val teachers: List<String>
    val staff: String

    fun admin(vararg args: String): String {
        val errors = File(dataDir, "admin.log")
        val p = ProcessBuilder(listOf(binary, "--data-dir", dataDir.path, "admin") + args)
            .redirectError(errors).start()
        val out = p.inputStream.bufferedReader().readText()
        check(p.waitFor(120, TimeUnit.SECONDS) && p.exitValue() == 0) {
            "admin ${args[0]}: ${errors.readText().takeLast(2000)}"
        }
        return out
    }

    private fun user(vararg args: String): String =
        admin("create-user", *args).lines().first { it.startsWith("user ") }.split(" ").last()

    fun code(user: String): String = admin("enroll-code", "--user", user).trim()

    init {
        val city = admin("create-city", "--name", "Test City").trim()
        val county = admin("create-county", "--city", city, "--name", "Test County").trim()
        val school = admin("create-school", "--county", county, "--name", "School").trim()
        venue = admin("create-venue", "--county", county, "--name", "Museum").trim()
        val csv = File(dataDir, "pupils.csv")
        csv.writeText("display_name\n" + (0 until 3).joinToString("") { "Pupil $it\n" })
        pupils = admin("import-pupils", "--school", school, csv.path).lines()
            .filter { it.contains(" pupil ") }.map { it.split(" ").last() }
        check(pupils.size == 3) { "pupils: $pupils" }
        teachers = (0 until 2).map { user("--role", "teacher", "--school", school) }
        staff = user("--role", "venue-staff", "--venue", venue)
        val port = ServerSocket(0).use { it.localPort }
        url = "http://127.0.0.1:$port"
        proc = ProcessBuilder(binary, "--data-dir", dataDir.path, "--bind", "127.0.0.1:$port")
            .redirectErrorStream(true).redirectOutput(File(dataDir, "server.log")).start()
        val deadline = System.currentTimeMillis() + 60_000
        while (true) {
            check(proc.isAlive) { "kepu-server exited: " + File(dataDir, "server.log").readText() }
            val ready = runCatching {
                (URL("$url/readyz").openConnection() as java.net.HttpURLConnection).responseCode == 200
            }.getOrDefault(false)
            if (ready) break
            check(System.currentTimeMillis() < deadline) { "kepu-server not ready" }
            Thread.sleep(100)
        }
    }

    fun enrolled(user: String): KepuClient = runBlocking {
        val c = KepuClient.open(Files.createTempDirectory("kepu-kt-").toFile().path, url, null)
        c.enroll(code(user))
        c
    }

    fun stop() {
        proc.destroy()
        proc.waitFor(10, TimeUnit.SECONDS)
        dataDir.deleteRecursively()
    }
}

fun <T> eventually(what: String, check: () -> T?): T {
    val deadline = System.currentTimeMillis() + 30_000
    while (true) {
        check()?.let { return it }
        check(System.currentTimeMillis() < deadline) { "timed out waiting for $what" }
        Thread.sleep(50)
    }
}

class TestServer {
    private val proc: Process = ProcessBuilder(System.getenv("KEPU_TEST_SERVER")).start()
    private val out = BufferedReader(InputStreamReader(proc.inputStream))
    private val world: String = out.readLine()

    fun world(): String = world

    fun field(name: String): String =
        Regex("\"$name\":\"([^\"]*)\"").find(world)?.groupValues?.get(1) ?: error("no $name")

    fun passes(): List<String> =
        Regex("\"passes\":\\[([^\\]]*)\\]").find(world)!!.groupValues[1]
            .split(",").map { it.trim('"') }

    fun ask(line: String): String {
        proc.outputStream.write("$line\n".toByteArray())
        proc.outputStream.flush()
        return out.readLine().trim()
    }

    fun stop() {
        runCatching { ask("quit") }
        proc.waitFor()
    }
}

fun client(server: TestServer, dir: File = Files.createTempDirectory("kepu-kt-").toFile()): KepuClient =
    KepuClient.open(dir.path, server.field("url"), server.field("server_public_key"))

fun teacherWithBooking(server: TestServer): KepuClient = runBlocking {
    val c = client(server)
    c.enroll(server.ask("code teacher"))
    c.addDocument(server.field("booking_doc"))
    c.syncNow()
    c
}

fun pupilWithBooking(server: TestServer): KepuClient = runBlocking {
    val c = client(server)
    val pupil = Regex("\"pupils\":\\[\"([^\"]*)\"").find(server.world())!!.groupValues[1]
    c.enroll(server.ask("code pupil $pupil"))
    c.addDocument(server.field("booking_doc"))
    c.syncNow()
    c
}

fun main() {
    val server = TestServer()
    val booking = server.field("booking_doc")
    val passes = server.passes()
    val tests = linkedMapOf<String, () -> Unit>(
        "async syncNow fetches the booking and acknowledges offline scans" to {
            val teacher = teacherWithBooking(server)
            check(teacher.roster(booking).expected == 4u) { "roster not fetched" }
            teacher.scanPupilPass(booking, passes[0])
            check(teacher.syncStatus().pendingChanges > 0uL)
            val report = runBlocking { teacher.syncNow() }
            check(report.refused == 0u)
            check(teacher.syncStatus().pendingChanges == 0uL) { "still pending" }
            check(teacher.syncStatus().lastSyncMs != null)
        },
        "a document observer hears what is held, then a scan, on its own thread, until cancelled" to {
            val teacher = teacherWithBooking(server)
            val seen = Collections.synchronizedList(mutableListOf<Pair<String, DocumentKind?>>())
            val threads = Collections.synchronizedSet(mutableSetOf<String>())
            val handle = teacher.observeDocuments(object : DocumentObserver {
                override fun onDocumentChanged(docId: String, kind: DocumentKind?) {
                    threads.add(Thread.currentThread().name)
                    seen.add(docId to kind)
                }
            })
            eventually("the held documents") { seen.contains(booking to DocumentKind.BOOKING).takeIf { it } }
            Thread.sleep(200)
            seen.clear()
            teacher.scanPupilPass(booking, passes[1])
            eventually("the scan") { seen.isNotEmpty().takeIf { it } }
            check(seen.toList() == listOf(booking to DocumentKind.BOOKING)) { "seen $seen" }
            check(Thread.currentThread().name !in threads) { "called on the caller's thread" }
            handle.cancel()
            teacher.scanPupilPass(booking, passes[2])
            Thread.sleep(200)
            check(seen.size == 1)
        },
        "the sync status Flow starts with the current status and follows scans" to {
            val teacher = teacherWithBooking(server)
            runBlocking {
                val first = withTimeout(5_000) { teacher.syncStatusFlow().first() }
                check(first.enrolled && first.pendingChanges == 0uL) { "$first" }
                val twoPending = async(Dispatchers.Default) {
                    teacher.syncStatusFlow().first { it.pendingChanges == 2uL }
                }
                Thread.sleep(200)
                teacher.scanPupilPass(booking, passes[0])
                teacher.scanPupilPass(booking, passes[1])
                withTimeout(5_000) { twoPending.await() }
                teacher.syncNow()
                withTimeout(5_000) { teacher.syncStatusFlow().first { it.pendingChanges == 0uL } }
            }
        },
        "a cancelled syncNow coroutine closes its connection" to {
            val dir: File = Files.createTempDirectory("kepu-kt-").toFile()
            runBlocking { client(server, dir).also { it.enroll(server.ask("code teacher")) }.close() }
            ServerSocket(0).use { hole ->
                // A server that accepts and never answers: only cancelling ends the call.
                val stalled = KepuClient.open(dir.path, "http://127.0.0.1:${hole.localPort}", null)
                val result = runBlocking { withTimeoutOrNull(300) { stalled.syncNow() } }
                check(result == null) { "the sync did not stall" }
                hole.accept().use { s ->
                    s.soTimeout = 5_000
                    try {
                        while (s.getInputStream().read() != -1) {}
                    } catch (e: SocketTimeoutException) {
                        error("the cancelled sync kept its connection open")
                    }
                }
                check(!stalled.syncStatus().connected)
                stalled.close()
            }
        },
        "sign-out is ApiException.UnsyncedWork until synced, then the store is empty" to {
            val teacher = teacherWithBooking(server)
            teacher.scanPupilPass(booking, passes[3])
            try {
                runBlocking { teacher.signOut() }
                error("signed out with a check-in not synced")
            } catch (e: ApiException.UnsyncedWork) {
                check(e.pending == 1uL) { "pending ${e.pending}" }
            }
            check(teacher.roster(booking).arrived >= 1u)
            runBlocking { teacher.syncNow() }
            runBlocking { teacher.signOut() }
            check(teacher.identity() == null)
            try {
                teacher.documents()
                error("documents after sign-out")
            } catch (e: ApiException.NotEnrolled) {
            }
        },
        "a forged pass is ApiException.InvalidInput" to {
            val teacher = teacherWithBooking(server)
            val forged = passes[0].dropLast(4) + "AAAA"
            try {
                teacher.scanPupilPass(booking, forged)
                error("a forged pass was accepted")
            } catch (e: ApiException.InvalidInput) {
                check(!e.reason.contains(forged.substring(5, 30)))
            }
        },
        "a bad enrollment code is ApiException.Rejected from a suspend call" to {
            val c = client(server)
            try {
                runBlocking { c.enroll("KEPU-nope") }
                error("enrolled with a bad code")
            } catch (e: ApiException.Rejected) {
                check(e.reason == "invalid_enrollment_code") { e.reason }
            }
        },
        "roles, statuses and kinds are enums" to {
            val teacher = teacherWithBooking(server)
            check(teacher.identity()?.role == Role.TEACHER)
            check(teacher.booking(booking).status == BookingStatus.CONFIRMED)
            check(teacher.documents().any { it.kind == DocumentKind.REVOCATIONS })
        },
        "a refused scan is ApiException.Refused with the code and the path" to {
            val pupil = pupilWithBooking(server)
            try {
                pupil.scanPupilPass(booking, passes[1])
                error("a pupil scanned another pupil's pass")
            } catch (e: ApiException.Refused) {
                check(e.code == "not-own-pupil") { e.code }
                check(e.path.startsWith("check_in_records/")) { e.path }
            }
        },
        "a gate clock ten minutes ahead is ApiException.ClockSkew with the offset" to {
            val pupil = pupilWithBooking(server)
            val ahead = 600_000L
            val code = server.ask("gate-at ${System.currentTimeMillis() + ahead}")
            try {
                pupil.checkInWithGateCode(booking, code)
                error("a code from another time was accepted")
            } catch (e: ApiException.ClockSkew) {
                check(Math.abs(e.offsetMs - ahead) <= 30_000L) { "offset ${e.offsetMs}" }
            }
            check(pupil.checkInWithGateCode(booking, server.ask("gate")).pupilId.isNotEmpty())
        },
        "enrolling twice is ApiException.AlreadyEnrolled; a fresh store is NotEnrolled" to {
            val teacher = teacherWithBooking(server)
            try {
                runBlocking { teacher.enroll(server.ask("code teacher")) }
                error("enrolled twice")
            } catch (e: ApiException.AlreadyEnrolled) {
            }
            val fresh = client(server)
            try {
                fresh.documents()
                error("a fresh store listed documents")
            } catch (e: ApiException.NotEnrolled) {
            }
            fresh.close()
        },
        "a second open of a store is ApiException.StoreInUse until the first is closed" to {
            val dir: File = Files.createTempDirectory("kepu-kt-").toFile()
            val first = client(server, dir)
            try {
                client(server, dir)
                error("a second client opened the same store")
            } catch (e: ApiException.StoreInUse) {
                check(e.reason.isNotEmpty())
            }
            first.close()
            client(server, dir).close()
        },
    )
    val real = RealServer()
    tests["against kepu-server: a booking requested offline survives sign-out until synced"] = {
        val gate = real.enrolled(real.staff)
        val venueDoc = gate.identity()!!.venueDoc!!
        eventually("the venue document") {
            runBlocking { gate.syncNow() }
            gate.documents().any { it.docId == venueDoc && it.kind == DocumentKind.VENUE }.takeIf { it }
        }
        val start = System.currentTimeMillis() + 3_600_000
        val slot = gate.publishSlot(start, start + 7_200_000, 30u, "after school")
        runBlocking { gate.syncNow() }
        val teacher = real.enrolled(real.teachers[0])
        val doc = teacher.requestBooking(real.venue, slot, 2u, real.pupils.take(2))
        check(teacher.booking(doc).status == BookingStatus.REQUESTED)
        try {
            runBlocking { teacher.signOut() }
            error("signed out with an unsynced booking")
        } catch (e: ApiException.UnsyncedWork) {
        }
        eventually("the server's decision") {
            runBlocking { teacher.syncNow() }
            teacher.booking(doc).status.takeIf { it == BookingStatus.CONFIRMED }
        }
        check(teacher.syncStatus().pendingChanges == 0uL)
        runBlocking { teacher.signOut() }
        check(teacher.identity() == null)
        gate.close()
        teacher.close()
    }
    tests["against kepu-server: an app below the minimum is ApiException.AppTooOld and stays enrolled"] = {
        val teacher = real.enrolled(real.teachers[1])
        teacher.setAppVersion("1.0.0")
        real.admin("min-app-version", "--role", "teacher", "--version", "99.0")
        try {
            runBlocking { teacher.syncNow() }
            error("an app below the minimum synced")
        } catch (e: ApiException.AppTooOld) {
            check(e.minimum == "99.0") { e.minimum }
        }
        check(teacher.identity() != null)
        teacher.setAppVersion("99.0")
        runBlocking { teacher.syncNow() }
        real.admin("min-app-version", "--role", "teacher", "--clear")
        teacher.close()
    }
    var passed = 0
    var failed = 0
    for ((name, test) in tests) {
        try {
            test()
            passed++
            println("ok   $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: $e")
        }
    }
    server.stop()
    real.stop()
    println("$passed passed, $failed failed")
    System.exit(if (failed == 0) 0 else 1)
}

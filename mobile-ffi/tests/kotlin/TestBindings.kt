// Kotlin (JVM) tests of the generated bindings: async syncNow, an observer, typed errors
// and enums.
// Run by mobile-ffi/tests/run-bindings-tests.sh; prints "N passed, M failed".

import java.io.BufferedReader
import java.io.File
import java.io.InputStreamReader
import java.nio.file.Files
import kotlinx.coroutines.runBlocking
import org.kepu.mobile.ApiException
import org.kepu.mobile.BookingStatus
import org.kepu.mobile.DocumentKind
import org.kepu.mobile.DocumentObserver
import org.kepu.mobile.KepuClient
import org.kepu.mobile.Role

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
        "a document observer fires on a scan and stops after cancel" to {
            val teacher = teacherWithBooking(server)
            val seen = mutableListOf<DocumentKind?>()
            val handle = teacher.observeDocuments(object : DocumentObserver {
                override fun onDocumentChanged(docId: String, kind: DocumentKind?) {
                    seen.add(kind)
                }
            })
            teacher.scanPupilPass(booking, passes[1])
            check(seen == listOf<DocumentKind?>(DocumentKind.BOOKING)) { "seen $seen" }
            handle.cancel()
            teacher.scanPupilPass(booking, passes[2])
            check(seen.size == 1)
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
                check(e.path.startsWith("check_ins/")) { e.path }
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
    println("$passed passed, $failed failed")
    System.exit(if (failed == 0) 0 else 1)
}

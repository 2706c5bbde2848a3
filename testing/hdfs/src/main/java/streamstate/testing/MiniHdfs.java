package streamstate.testing;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * A real HDFS for streamstate's tests: one NameNode and one DataNode of
 * Hadoop's MiniDFSCluster, on 127.0.0.1 and a fixed port.
 *
 * Usage: MiniHdfs PORT BASE_DIR [CONTROL_PORT]. Prints
 * "MINIHDFS READY hdfs://127.0.0.1:PORT" once the cluster accepts writes,
 * then runs until it is killed or its standard input closes.
 *
 * With CONTROL_PORT, a line protocol on 127.0.0.1:CONTROL_PORT lets storage
 * fault tests stop and restart the DataNode: send "stop-datanode" or
 * "restart-datanode" (same port, same blocks), read back "ok" or
 * "error ...".
 */
public final class MiniHdfs {
    private MiniHdfs() {}

    public static void main(String[] args) throws Exception {
        int port = args.length > 0 ? Integer.parseInt(args[0]) : 9000;
        File base = new File(args.length > 1 ? args[1] : "target/minihdfs").getAbsoluteFile();
        Configuration conf = new HdfsConfiguration();
        conf.set(MiniDFSCluster.HDFS_MINIDFS_BASEDIR, base.getPath());
        conf.set(DFSConfigKeys.DFS_NAMENODE_RPC_BIND_HOST_KEY, "127.0.0.1");
        conf.set("dfs.datanode.address", "127.0.0.1:0");
        conf.set("dfs.datanode.http.address", "127.0.0.1:0");
        conf.set("dfs.datanode.ipc.address", "127.0.0.1:0");
        conf.set("dfs.namenode.http-address", "127.0.0.1:0");
        conf.setBoolean("dfs.permissions.enabled", false);
        conf.setInt("dfs.replication", 1);
        MiniDFSCluster cluster = new MiniDFSCluster.Builder(conf)
                .nameNodePort(port)
                .numDataNodes(1)
                .format(true)
                .build();
        cluster.waitActive();
        Runtime.getRuntime().addShutdownHook(new Thread(cluster::shutdown));
        if (args.length > 2) {
            startControl(cluster, Integer.parseInt(args[2]));
        }
        System.out.println("MINIHDFS READY hdfs://127.0.0.1:" + port);
        System.out.flush();
        // Run until stdin closes (the test script holds it open) or a signal.
        while (System.in.read() != -1) {
            // keep running
        }
        cluster.shutdown();
    }

    private static void startControl(MiniDFSCluster cluster, int controlPort) throws Exception {
        ServerSocket server = new ServerSocket(controlPort, 8, InetAddress.getLoopbackAddress());
        Thread thread = new Thread(() -> {
            MiniDFSCluster.DataNodeProperties stopped = null;
            while (true) {
                try (Socket client = server.accept();
                        BufferedReader in = new BufferedReader(
                                new InputStreamReader(client.getInputStream(), StandardCharsets.UTF_8));
                        PrintWriter out = new PrintWriter(client.getOutputStream(), true, StandardCharsets.UTF_8)) {
                    String command = in.readLine();
                    try {
                        if ("stop-datanode".equals(command) && stopped == null) {
                            stopped = cluster.stopDataNode(0);
                            out.println("ok");
                        } else if ("restart-datanode".equals(command) && stopped != null) {
                            cluster.restartDataNode(stopped, true);
                            stopped = null;
                            cluster.waitActive();
                            cluster.triggerHeartbeats();
                            out.println("ok");
                        } else {
                            out.println("error unknown or out-of-order command: " + command);
                        }
                    } catch (Exception e) {
                        out.println("error " + e);
                    }
                } catch (Exception e) {
                    System.err.println("control connection failed: " + e);
                }
            }
        }, "minihdfs-control");
        thread.setDaemon(true);
        thread.start();
    }
}

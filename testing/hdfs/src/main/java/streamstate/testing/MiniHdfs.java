package streamstate.testing;

import java.io.File;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.DFSConfigKeys;
import org.apache.hadoop.hdfs.HdfsConfiguration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * A real HDFS for streamstate's tests: one NameNode and one DataNode of
 * Hadoop's MiniDFSCluster, on 127.0.0.1 and a fixed port.
 *
 * Usage: MiniHdfs PORT BASE_DIR. Prints "MINIHDFS READY hdfs://127.0.0.1:PORT"
 * once the cluster accepts writes, then runs until it is killed or its
 * standard input closes.
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
        System.out.println("MINIHDFS READY hdfs://127.0.0.1:" + port);
        System.out.flush();
        // Run until stdin closes (the test script holds it open) or a signal.
        while (System.in.read() != -1) {
            // keep running
        }
        cluster.shutdown();
    }
}

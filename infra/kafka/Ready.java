// Readiness probe for infra/kafka/kafka.sh: exits 0 once the broker answers a real metadata
// request (DescribeCluster returns at least one node and a controller), 1 on timeout or when
// the broker process dies first. Run as a single-file program: java -cp 'libs/*' Ready.java
//   Ready.java <bootstrap> <timeout-seconds> [broker-pid]
import java.time.Duration;
import java.time.Instant;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterResult;

public class Ready {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        Instant deadline = Instant.now().plus(Duration.ofSeconds(Long.parseLong(args[1])));
        Long pid = args.length > 2 ? Long.parseLong(args[2]) : null;
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "3000");
        props.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, "500");
        String last = "no answer yet";
        try (Admin admin = Admin.create(props)) {
            while (Instant.now().isBefore(deadline)) {
                if (pid != null && !ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                    System.err.println("broker process " + pid + " exited before it was ready");
                    System.exit(1);
                }
                try {
                    DescribeClusterResult cluster = admin.describeCluster();
                    int nodes = cluster.nodes().get(3, TimeUnit.SECONDS).size();
                    boolean controller = !cluster.controller().get(3, TimeUnit.SECONDS).isEmpty();
                    if (nodes > 0 && controller) {
                        System.exit(0);
                    }
                    last = "nodes=" + nodes + " controller=" + controller;
                } catch (Exception e) {
                    last = e.getClass().getSimpleName() + ": " + e.getMessage();
                }
                Thread.sleep(250);
            }
        }
        System.err.println("broker on " + bootstrap + " not ready: " + last);
        System.exit(1);
    }
}

import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.common.config.ConfigResource;
import java.util.Map;

/** Sets a topic's retention.ms to 1 s through a KRaft controller listener, as any client on the machine can:
 *  exit 0 when the controller accepted, 1 when it refused or never answered. */
public class ControllerProbe {
    public static void main(String[] args) {
        Properties props = new Properties();
        props.put("bootstrap.controllers", args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "10000");
        try (Admin admin = Admin.create(props)) {
            ConfigResource topic = new ConfigResource(ConfigResource.Type.TOPIC, args[1]);
            AlterConfigOp op = new AlterConfigOp(new ConfigEntry("retention.ms", "1000"),
                                                 AlterConfigOp.OpType.SET);
            admin.incrementalAlterConfigs(Map.of(topic, List.of(op))).all()
                 .get(15, TimeUnit.SECONDS);
            System.out.println("altered " + args[1]);
            System.exit(0);
        } catch (Exception e) {
            System.out.println("refused: " + e);
            System.exit(1);
        }
    }
}

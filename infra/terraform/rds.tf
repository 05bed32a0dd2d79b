# MySQL for MLflow's tracking and registry data (runs, params, metrics, registered models and
# aliases). Private subnets only, reachable only from the cluster's pods, encrypted, backed up.
# RDS generates the master password and keeps it in Secrets Manager (rotated by RDS); it never
# appears in this configuration or its state.

resource "aws_db_subnet_group" "mlflow" {
  name       = "${var.name}-mlflow"
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_security_group" "mlflow_db" {
  name        = "${var.name}-mlflow-db"
  description = "MLflow database: MySQL from the EKS cluster only"
  vpc_id      = aws_vpc.this.id
}

resource "aws_vpc_security_group_ingress_rule" "mlflow_db_from_cluster" {
  security_group_id            = aws_security_group.mlflow_db.id
  description                  = "MySQL from EKS nodes and pods (the cluster security group)"
  ip_protocol                  = "tcp"
  from_port                    = 3306
  to_port                      = 3306
  referenced_security_group_id = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

# Connections without TLS are refused by the server itself.
resource "aws_db_parameter_group" "mlflow" {
  name   = "${var.name}-mlflow-mysql80"
  family = "mysql8.0"

  parameter {
    name  = "require_secure_transport"
    value = "1"
  }
}

resource "aws_db_instance" "mlflow" {
  identifier     = "${var.name}-mlflow"
  engine         = "mysql"
  engine_version = "8.0"
  instance_class = var.mlflow_db_instance_class

  db_name  = "mlflow"
  username = "mlflow"
  # RDS creates the password and stores it in Secrets Manager, encrypted with our key.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.wms.arn

  allocated_storage     = var.mlflow_db_allocated_storage
  max_allocated_storage = var.mlflow_db_allocated_storage * 5
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.wms.arn

  db_subnet_group_name   = aws_db_subnet_group.mlflow.name
  vpc_security_group_ids = [aws_security_group.mlflow_db.id]
  publicly_accessible    = false
  multi_az               = var.mlflow_db_multi_az
  parameter_group_name   = aws_db_parameter_group.mlflow.name

  iam_database_authentication_enabled = true

  backup_retention_period   = var.mlflow_db_backup_retention_days
  backup_window             = "02:00-03:00"
  maintenance_window        = "sun:03:30-sun:04:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name}-mlflow-final"

  auto_minor_version_upgrade      = true
  enabled_cloudwatch_logs_exports = ["error", "slowquery", "audit"]
  monitoring_interval             = 60
  monitoring_role_arn             = aws_iam_role.rds_monitoring.arn

  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.wms.arn
  performance_insights_retention_period = 7

  depends_on = [aws_cloudwatch_log_group.rds]
}

# RDS would create these on first export, unencrypted and kept forever.
resource "aws_cloudwatch_log_group" "rds" {
  for_each = toset(["error", "slowquery", "audit"])

  name              = "/aws/rds/instance/${var.name}-mlflow/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.wms.arn
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${var.name}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_trust.json
}

data "aws_iam_policy_document" "rds_monitoring_trust" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

include $(sort $(wildcard $(BR2_EXTERNAL_WAPHONE_PATH)/package/*/*.mk))
